package devcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a component running as a child process, its output
// appended to a log file. With Restart it is supervised like under
// systemd's Restart=always: when it exits without being asked to, it is
// started again a moment later.
type Process struct {
	Binary  string
	Args    []string
	LogPath string
	Restart bool
	// Env is added to this process's environment for the child.
	Env []string
	// RestartDelay is the wait before a supervised process is started
	// again (default 500ms).
	RestartDelay time.Duration

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping bool
	done     chan error // the supervisor's result, once stopped
	starts   int
}

// defaultRestartDelay is the wait before a supervised process is started
// again.
const defaultRestartDelay = 500 * time.Millisecond

// Start starts the process and its supervisor.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		return errors.New("devcluster: process already running")
	}
	p.stopping = false
	exited, err := p.spawn()
	if err != nil {
		return err
	}
	p.done = make(chan error, 1)
	go p.supervise(exited)
	return nil
}

// spawn starts the binary once; exited gets its exit. Called with mu held.
func (p *Process) spawn() (<-chan error, error) {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.Binary, p.Args...)
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("devcluster: start %s: %w", p.Binary, err)
	}
	p.cmd = cmd
	p.starts++
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		logf.Close()
		exited <- err
	}()
	return exited, nil
}

func (p *Process) supervise(exited <-chan error) {
	for {
		err := <-exited
		p.mu.Lock()
		if p.stopping || !p.Restart {
			done := p.done
			p.mu.Unlock()
			done <- err
			return
		}
		p.mu.Unlock()
		delay := p.RestartDelay
		if delay == 0 {
			delay = defaultRestartDelay
		}
		time.Sleep(delay)
		p.mu.Lock()
		if p.stopping {
			done := p.done
			p.mu.Unlock()
			done <- nil
			return
		}
		var serr error
		exited, serr = p.spawn()
		p.mu.Unlock()
		if serr != nil {
			p.mu.Lock()
			done := p.done
			p.mu.Unlock()
			done <- serr
			return
		}
	}
}

// Stop asks the process to stop (SIGINT), waits up to 30 s, then kills
// it. It is not restarted.
func (p *Process) Stop() error {
	p.mu.Lock()
	if p.done == nil {
		p.mu.Unlock()
		return nil
	}
	p.stopping = true
	cmd, done := p.cmd, p.done
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Signal(os.Interrupt)
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.done = nil
		p.mu.Unlock()
	}()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			return nil // ended by our signal
		}
		return err
	case <-time.After(30 * time.Second):
		p.mu.Lock()
		if p.cmd != nil {
			p.cmd.Process.Kill()
		}
		p.mu.Unlock()
		<-done
		return fmt.Errorf("devcluster: %s did not stop in 30s: killed", p.Binary)
	}
}

// Kill sends SIGKILL, as a crash would; a supervised process is started
// again.
func (p *Process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("devcluster: process not running")
	}
	return p.cmd.Process.Kill()
}

// PID is the running process's id, 0 when there is none.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Starts is how many times the process was started (restarts included).
func (p *Process) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}
