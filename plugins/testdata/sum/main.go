// Command sum is a test plugin (package sumcore) without eh_state_merge.
package main

import "github.com/edgehub/edgehub/plugins/testdata/sumcore"

func init() { sumcore.Register() }

func main() {}
