package watchdog

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe := Dials("tcp", ln.Addr().String(), time.Second)
	if !probe() {
		t.Fatal("a listening service is alive")
	}
	ln.Close()
	if probe() {
		t.Fatal("a closed listener is not")
	}
}

func TestAdvances(t *testing.T) {
	n := uint64(0)
	probe := Advances(func() uint64 { return n })
	if !probe() {
		t.Fatal("the first probe only takes note")
	}
	if probe() {
		t.Fatal("no progress since the last probe")
	}
	n++
	if !probe() {
		t.Fatal("progress")
	}
}

// TestServeWithProbe: READY=1 at once, WATCHDOG=1 while the probe holds,
// none while it fails, STOPPING=1 at the end.
func TestServeWithProbe(t *testing.T) {
	conn, read := notifySocket(t, "40000")
	var alive atomic.Bool
	alive.Store(true)
	probes := make(chan struct{}, 100)
	stopping := Serve(context.Background(), func() bool {
		probes <- struct{}{}
		return alive.Load()
	}, quiet())
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	if got := read(); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	alive.Store(false)
	// Drain what was sent before the probe failed, then wait for two
	// failed probes: nothing more may arrive.
	for len(probes) > 0 {
		<-probes
	}
	<-probes
	<-probes
	conn.SetReadDeadline(time.Now())
	for {
		buf := make([]byte, 64)
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	<-probes
	conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("petted systemd while the probe failed (%d bytes)", n)
	}
	stopping()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

// notifySocket stands in for systemd: it sets NOTIFY_SOCKET (and
// WATCHDOG_USEC to usec) for the test and returns the socket and a
// reader of the next notification.
func notifySocket(t *testing.T, usec string) (*net.UnixConn, func() string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", usec)
	t.Setenv("WATCHDOG_PID", "")
	return conn, func() string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v", err)
		}
		return string(buf[:n])
	}
}
