//go:build chaos

package plugins

import "time"

// Under the chaos tag each phase of TestHostilePluginsChaos soaks for a
// minute.
func init() { hostileSoak = time.Minute }
