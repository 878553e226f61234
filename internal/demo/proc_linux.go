package demo

import "syscall"

// sysProcAttr puts a hub in its own process group, so that the terminal's
// Ctrl-C reaches only the demo, which stops the hubs in order, and kills it
// if the demo dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
