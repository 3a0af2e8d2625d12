package watchdog

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Systemd speaks sd_notify to the service manager when the process runs
// under a unit of Type=notify (NOTIFY_SOCKET is set); otherwise every
// call does nothing. The environment is left as it is, so several agents
// in one process (tests) each notify.
type Systemd struct {
	healthy func() bool
	log     *slog.Logger
}

// NewSystemd returns the notifier; w decides whether the service is
// alive (nil: always).
func NewSystemd(w *Watchdog, log *slog.Logger) *Systemd {
	return NewSystemdProbe(w.Healthy, log)
}

// NewSystemdProbe returns a notifier for a service without registered
// loops: probe, asked before every WATCHDOG=1, says whether it is alive.
func NewSystemdProbe(probe func() bool, log *slog.Logger) *Systemd {
	if log == nil {
		log = slog.Default()
	}
	return &Systemd{healthy: probe, log: log}
}

// Serve tells systemd the service is ready and pets its watchdog while
// probe holds, until ctx ends; call the returned func as the service
// stops. Outside systemd it does nothing.
func Serve(ctx context.Context, probe func() bool, log *slog.Logger) (stopping func()) {
	s := NewSystemdProbe(probe, log)
	s.Ready()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.KeepAlive(ctx)
	}()
	return func() {
		s.Stopping()
		cancel()
		<-done
	}
}

// Ready says the service is up (READY=1).
func (s *Systemd) Ready() { s.notify(daemon.SdNotifyReady) }

// Stopping says the service is shutting down (STOPPING=1).
func (s *Systemd) Stopping() { s.notify(daemon.SdNotifyStopping) }

func (s *Systemd) notify(state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		s.log.Warn("systemd notify failed", "state", state, "err", err)
	}
	return sent
}

// KeepAlive sends WATCHDOG=1 every half of the unit's WatchdogSec
// (WATCHDOG_USEC) until ctx ends, but only while no loop is stalled: a
// stalled agent stops petting systemd's watchdog, which then restarts it
// even if the stall callback could not end the process. It returns at
// once when the unit has no watchdog.
func (s *Systemd) KeepAlive(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		s.log.Warn("systemd watchdog settings", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		s.keepAliveOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keepAliveOnce pets the service manager's watchdog if the agent is
// healthy; it reports whether it did.
func (s *Systemd) keepAliveOnce() bool {
	if !s.healthy() {
		return false
	}
	return s.notify(daemon.SdNotifyWatchdog)
}
