package devcluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestClaimIsExclusive: a block's claim file locked by one Ports cannot be
// claimed by another until the first lets go, and the next Ports gets
// another block.
func TestClaimIsExclusive(t *testing.T) {
	var a Ports
	if err := a.claim(); err != nil {
		t.Fatal(err)
	}
	name := a.held[0].Name()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := tryClaim(f); ok || err != nil {
		t.Fatalf("second claim on %s: %v, %v; want refused", filepath.Base(name), ok, err)
	}
	var b Ports
	if err := b.claim(); err != nil {
		t.Fatal(err)
	}
	if b.next == a.end-portBlock || b.held[0].Name() == name {
		t.Fatalf("both claimed the block at %d", b.next)
	}
	a.held[0].Close()
	if ok, err := tryClaim(f); !ok || err != nil {
		t.Fatalf("claim after release: %v, %v", ok, err)
	}
}
