package watchdog

import (
	"net"
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
