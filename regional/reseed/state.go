package reseed

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// stateVersion is the format of state files this code writes.
const stateVersion = 1

// state is what a run records so that a later run with the same sources
// resumes: the plan (range boundaries) and which ranges are finished.
type state struct {
	Version int `json:"version"`
	// Sources names what was read (kind, absolute paths, table); a state
	// file is only used by a run over the same sources.
	Sources string  `json:"sources"`
	Ranges  []Range `json:"ranges"`
	Done    []int   `json:"done"`
}

// DefaultStatePath is the state file a run over sources uses when none is
// given: reseed-<hash of the sources>.json in the current directory, so
// that re-running the same command finds it.
func DefaultStatePath(sources string) string {
	sum := sha256.Sum256([]byte(sources))
	return "reseed-" + hex.EncodeToString(sum[:6]) + ".json"
}

// loadState reads a state file; a missing file is (nil, nil).
func loadState(path, sources string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reseed: state file: %w", err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("reseed: state file %s: %w (remove it to start over)", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("reseed: state file %s: format %d, want %d (remove it to start over)", path, st.Version, stateVersion)
	}
	if st.Sources != sources {
		return nil, fmt.Errorf("reseed: state file %s is for other sources (%s), not %s: remove it or pass another --state", path, st.Sources, sources)
	}
	if len(st.Ranges) == 0 {
		return nil, fmt.Errorf("reseed: state file %s: no ranges (remove it to start over)", path)
	}
	for i, r := range st.Ranges {
		if r.Index != i {
			return nil, fmt.Errorf("reseed: state file %s: range %d has index %d (remove it to start over)", path, i, r.Index)
		}
	}
	for _, d := range st.Done {
		if d < 0 || d >= len(st.Ranges) {
			return nil, fmt.Errorf("reseed: state file %s: finished range %d does not exist (remove it to start over)", path, d)
		}
	}
	return &st, nil
}

// save writes the state whole or not at all: a temporary file in the same
// directory, synced, then renamed over the old one, so that a run killed
// at any moment leaves the previous state or the new one.
func (st *state) save(path string) error {
	sort.Ints(st.Done)
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("reseed: state file: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("reseed: state file: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("reseed: state file: %w", err)
	}
	return nil
}

func (st *state) isDone(i int) bool {
	for _, d := range st.Done {
		if d == i {
			return true
		}
	}
	return false
}
