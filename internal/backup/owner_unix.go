//go:build unix

package backup

import (
	"fmt"
	"os"
	"syscall"
)

// matchOwner gives path the owner and group of ref, when they differ: a
// restore run as root must leave files the agent's user can open. Only
// root can give a file away; anyone else gets an error saying to run as
// the agent's user.
func matchOwner(path, ref string) error {
	want, err := os.Stat(ref)
	if err != nil {
		return err
	}
	have, err := os.Stat(path)
	if err != nil {
		return err
	}
	w, ok1 := want.Sys().(*syscall.Stat_t)
	h, ok2 := have.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || (w.Uid == h.Uid && w.Gid == h.Gid) {
		return nil
	}
	if err := os.Chown(path, int(w.Uid), int(w.Gid)); err != nil {
		return fmt.Errorf("%s must belong to uid %d, gid %d, as %s does, for the agent to open it: %w (run restore as the agent's user, or as root)", path, w.Uid, w.Gid, ref, err)
	}
	return nil
}
