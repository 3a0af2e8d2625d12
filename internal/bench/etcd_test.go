package bench

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestEtcdBenchmarksRun runs both peer workloads against a real
// three-member etcd cluster: every put must reach a watch on every
// member, and the figures must be ordered.
func TestEtcdBenchmarksRun(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd is not installed (the etcd-server package)")
	}
	ctx := context.Background()
	opts := EtcdOptions{Binary: "etcd", Dir: t.TempDir(), Members: 3}
	res, err := EtcdPropagation(ctx, opts, 200, time.Second, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Members != 3 || res.Writes != 200 || res.NotVisible != 0 {
		t.Fatalf("not every put was seen on every member: %+v", res)
	}
	if !(0 < res.VisibleP50Ms && res.VisibleP50Ms <= res.VisibleP99Ms && res.VisibleP99Ms <= res.VisibleMaxMs) || res.AckP50Ms <= 0 {
		t.Fatalf("quantiles out of order: %+v", res)
	}
	opts.Dir = t.TempDir()
	tp, err := EtcdThroughput(ctx, opts, 4, 500*time.Millisecond, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", tp)
	if tp.Writes <= 0 || tp.WritesPerSec <= 0 || tp.Writers != 4 {
		t.Fatalf("no puts counted: %+v", tp)
	}
}

func TestEtcdMissingBinaryIsNamed(t *testing.T) {
	_, err := EtcdPropagation(context.Background(), EtcdOptions{Binary: "no-such-etcd-here", Dir: t.TempDir(), Members: 3}, 10, time.Second, testWriter{t})
	if err == nil || !strings.Contains(err.Error(), "no-such-etcd-here") || !strings.Contains(err.Error(), "etcd-server") {
		t.Fatalf("want an error naming the binary and the package, got %v", err)
	}
}

// TestEtcdThatExitsIsReported: a member whose process ends before it is
// healthy (a port taken, a bad flag) is reported as such, with its log,
// rather than waited for.
func TestEtcdThatExitsIsReported(t *testing.T) {
	if _, err := exec.LookPath("false"); err != nil {
		t.Skip("no false(1) here")
	}
	_, err := EtcdThroughput(context.Background(), EtcdOptions{Binary: "false", Dir: t.TempDir(), Members: 3}, 4, time.Second, testWriter{t})
	if err == nil || !strings.Contains(err.Error(), "exited before it was healthy") {
		t.Fatalf("want the member's exit reported, got %v", err)
	}
}

// TestWatchResponseDecoding checks the hand-written decoding of etcd's
// WatchResponse against an encoding of its fields, and that truncated
// input is an error rather than a partial answer.
func TestWatchResponseDecoding(t *testing.T) {
	kv := func(key string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType) // KeyValue.key
		b = protowire.AppendBytes(b, []byte(key))
		b = protowire.AppendTag(b, 3, protowire.VarintType) // mod_revision
		b = protowire.AppendVarint(b, 42)
		b = protowire.AppendTag(b, 5, protowire.BytesType) // value
		return protowire.AppendBytes(b, []byte("v"))
	}
	event := func(key string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.VarintType) // type PUT
		b = protowire.AppendVarint(b, 0)
		b = protowire.AppendTag(b, 2, protowire.BytesType) // kv
		return protowire.AppendBytes(b, kv(key))
	}
	var resp []byte
	resp = protowire.AppendTag(resp, 1, protowire.BytesType) // header
	resp = protowire.AppendBytes(resp, []byte{0x08, 0x01})
	resp = protowire.AppendTag(resp, 2, protowire.VarintType) // watch_id
	resp = protowire.AppendVarint(resp, 7)
	resp = protowire.AppendTag(resp, 3, protowire.VarintType) // created
	resp = protowire.AppendVarint(resp, 1)
	resp = protowire.AppendTag(resp, 8, protowire.Fixed64Type) // a field this reader skips
	resp = protowire.AppendFixed64(resp, 9)
	for _, k := range []string{"b/1", "b/22"} {
		resp = protowire.AppendTag(resp, 11, protowire.BytesType) // events
		resp = protowire.AppendBytes(resp, event(k))
	}
	created, keys, err := watchResponse(resp)
	if err != nil || !created || len(keys) != 2 || string(keys[0]) != "b/1" || string(keys[1]) != "b/22" {
		t.Fatalf("got created=%v keys=%q err=%v", created, keys, err)
	}
	// Cut inside the last event: its length runs past the end.
	if _, _, err := watchResponse(resp[:len(resp)-3]); err == nil {
		t.Fatal("a truncated response decoded without an error")
	}
	// A field number of zero is not protobuf.
	if _, _, err := watchResponse([]byte{0x00, 0x01}); err == nil {
		t.Fatal("garbage decoded without an error")
	}
}
