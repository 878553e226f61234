package hub

import "time"

// chaosClock, when set, is the store's wall clock instead of time.Now. Only
// builds with the chaos tag set it (clock_chaos.go), so the fault suite can
// step the clock of a running hub process; ages are still measured by the
// real monotonic clock, as they are when a real wall clock steps.
var chaosClock func() time.Time
