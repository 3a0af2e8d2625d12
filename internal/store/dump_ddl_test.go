package store

import (
	"context"
	"fmt"
	"os"
	"testing"
)

func TestDumpDDL(t *testing.T) {
	if os.Getenv("PATINA_DUMP_DDL") == "" {
		t.Skip()
	}
	s := regionalStore(t, t.TempDir(), "x")
	defer s.Close()
	_ = context.Background()
	tb := s.Schema().Tables["machines"]
	for _, q := range clockDDL(tb) {
		fmt.Println(q + ";")
	}
	for _, q := range captureTriggers(tb) {
		fmt.Println(q + ";")
	}
}
