package devcluster

import "syscall"

// childAttr keeps a child out of the terminal's process group, so that
// Ctrl-C reaches the parent alone, which stops the children in order
// (a child that got the signal itself would exit before its supervisor
// knew it was stopping, and be started again); and it has the kernel
// stop the child when the parent dies without stopping it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
