//go:build !linux

package devcluster

import "syscall"

// childAttr: elsewhere the children share the parent's process group,
// and outlive it if it is killed.
func childAttr() *syscall.SysProcAttr { return nil }
