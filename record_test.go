package edgehub

import "testing"

func TestClone(t *testing.T) {
	r := Record{Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: "a", Value: []byte("b")}}}
	c := r.Clone()
	r.Key[0], r.Value[0], r.Headers[0].Value[0] = 'x', 'x', 'x'
	if string(c.Key) != "k" || string(c.Value) != "v" || string(c.Headers[0].Value) != "b" {
		t.Fatalf("clone shares memory: %+v", c)
	}
}
