package hub

import (
	"strings"
	"testing"
	"time"
)

func TestGroupsConfig(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want string // substring of the error; "" for none
		ok   func(GroupsConfig) bool
	}{
		{name: "defaults", toml: "", ok: func(c GroupsConfig) bool {
			f := c.withDefaults()
			return c == GroupsConfig{} && time.Duration(f.DefaultSessionTimeout) == 10*time.Second &&
				time.Duration(f.MinSessionTimeout) == time.Second && time.Duration(f.MaxSessionTimeout) == 5*time.Minute && f.MaxMembers == 1000
		}},
		{name: "short timeouts for tests", toml: "[groups]\nmin_session_timeout = \"100ms\"\ndefault_session_timeout = \"500ms\"\n",
			ok: func(c GroupsConfig) bool {
				return time.Duration(c.withDefaults().DefaultSessionTimeout) == 500*time.Millisecond
			}},
		{name: "negative", toml: "[groups]\nmax_members = -1\n", want: "hub.toml:2: groups.max_members: -1 is negative"},
		{name: "too short", toml: "[groups]\nmin_session_timeout = \"1ms\"\n", want: "groups.min_session_timeout: 1ms below 10ms"},
		{name: "min above max", toml: "[groups]\nmin_session_timeout = \"10m\"\n", want: "groups.min_session_timeout: 10m above max_session_timeout 5m"},
		{name: "default outside the bounds", toml: "[groups]\nmax_session_timeout = \"5s\"\n",
			want: "groups.default_session_timeout: 10s outside min_session_timeout..max_session_timeout (1s..5s)"},
		{name: "unknown key", toml: "[groups]\nsession_timeout = \"5s\"\n", want: "groups.session_timeout: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("hub.toml", []byte(tt.toml))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.ok(c.Groups) {
				t.Fatalf("groups %+v", c.Groups)
			}
		})
	}
}
