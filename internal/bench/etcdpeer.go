package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/patina-db/patina/internal/devcluster"
)

// An etcd cluster on this host, the peer the benchmarks' targets are set
// against, so that a benchmark can report a ratio measured in the same
// hour rather than against a figure from another day. It speaks etcd's
// own gRPC API, as etcd's benchmark tool does, with the few messages it
// needs encoded by hand: no etcd module is linked in.

// etcdPeer is a running etcd cluster of loopback members.
type etcdPeer struct {
	clientAddrs []string // host:port of each member's gRPC/HTTP endpoint
	procs       []*exec.Cmd
	exited      []chan struct{} // closed when the member's process has ended
	logs        []string
	conns       []*grpc.ClientConn
}

// etcdReadyTimeout bounds how long the members get to elect a leader.
const etcdReadyTimeout = 30 * time.Second

// startEtcd starts members etcd processes of binary under dir and waits
// until every member reports itself healthy (which needs a leader).
func startEtcd(ctx context.Context, binary, dir string, members, procs int) (_ *etcdPeer, err error) {
	if members < 1 {
		return nil, errors.New("bench: an etcd cluster needs at least one member")
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("bench: etcd binary %q: %w (install etcd-server, or pass --etcd)", binary, err)
	}
	var ports devcluster.Ports
	taken, err := ports.Take(2 * members)
	if err != nil {
		return nil, err
	}
	p := &etcdPeer{}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	var initial []string
	for i := 0; i < members; i++ {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i+1, taken[2*i+1]))
		p.clientAddrs = append(p.clientAddrs, fmt.Sprintf("127.0.0.1:%d", taken[2*i]))
	}
	for i := 0; i < members; i++ {
		name := fmt.Sprintf("m%d", i+1)
		clientURL := "http://" + p.clientAddrs[i]
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", taken[2*i+1])
		logPath := filepath.Join(dir, name+".log")
		logf, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("bench: etcd log: %w", err)
		}
		cmd := exec.Command(path,
			"--name", name,
			"--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "patina-bench")
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", procs))
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: start etcd %s: %w", name, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		p.procs = append(p.procs, cmd)
		p.exited = append(p.exited, exited)
		p.logs = append(p.logs, logPath)
	}
	deadline := time.Now().Add(etcdReadyTimeout)
	for i, addr := range p.clientAddrs {
		if err := waitEtcdHealthy(ctx, addr, deadline, p.exited[i]); err != nil {
			return nil, fmt.Errorf("bench: etcd member m%d: %w; its log ends:\n%s", i+1, err, devcluster.LogTail(p.logs[i], 10))
		}
	}
	for _, addr := range p.clientAddrs {
		conn, err := p.dial(addr)
		if err != nil {
			return nil, err
		}
		p.conns = append(p.conns, conn)
	}
	return p, nil
}

// dial opens a gRPC connection to a member.
func (p *etcdPeer) dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return nil, fmt.Errorf("bench: dial etcd %s: %w", addr, err)
	}
	return conn, nil
}

// waitEtcdHealthy polls a member's /health until it says true, or its
// process ends.
func waitEtcdHealthy(ctx context.Context, addr string, deadline time.Time, exited <-chan struct{}) error {
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`) {
				return nil
			}
			err = fmt.Errorf("health %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("exited before it was healthy")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("not healthy within %s: %w", etcdReadyTimeout, last)
}

// stop closes the connections and kills the members: their data is a
// benchmark's, and a member told to stop politely first tries to hand
// its leadership to peers that are stopping too, which takes seconds.
func (p *etcdPeer) stop() {
	for _, c := range p.conns {
		c.Close()
	}
	for i, cmd := range p.procs {
		_ = cmd.Process.Kill()
		<-p.exited[i]
	}
}

// put writes key = value through member i.
func (p *etcdPeer) put(ctx context.Context, i int, key, value []byte) error {
	return etcdPut(ctx, p.conns[i], key, value)
}

// etcdPut writes key = value over conn.
func etcdPut(ctx context.Context, conn *grpc.ClientConn, key, value []byte) error {
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType) // PutRequest.key
	req = protowire.AppendBytes(req, key)
	req = protowire.AppendTag(req, 2, protowire.BytesType) // PutRequest.value
	req = protowire.AppendBytes(req, value)
	var resp rawMsg
	if err := conn.Invoke(ctx, "/etcdserverpb.KV/Put", rawMsg(req), &resp); err != nil {
		return fmt.Errorf("etcd put to %s: %w", conn.CanonicalTarget(), err)
	}
	return nil
}

// watchPrefix watches every key under prefix on member i and calls seen
// with each key put, as the member reports it, until ctx ends. It
// returns once the watch is established.
func (p *etcdPeer) watchPrefix(ctx context.Context, i int, prefix string, seen func(key []byte)) (wait func() error, _ error) {
	desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true, ClientStreams: true}
	st, err := p.conns[i].NewStream(ctx, desc, "/etcdserverpb.Watch/Watch")
	if err != nil {
		return nil, fmt.Errorf("etcd watch on m%d: %w", i+1, err)
	}
	end := []byte(prefix)
	end[len(end)-1]++
	var create []byte
	create = protowire.AppendTag(create, 1, protowire.BytesType) // WatchCreateRequest.key
	create = protowire.AppendBytes(create, []byte(prefix))
	create = protowire.AppendTag(create, 2, protowire.BytesType) // .range_end
	create = protowire.AppendBytes(create, end)
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType) // WatchRequest.create_request
	req = protowire.AppendBytes(req, create)
	if err := st.SendMsg(rawMsg(req)); err != nil {
		return nil, fmt.Errorf("etcd watch on m%d: %w", i+1, err)
	}
	var first rawMsg
	if err := st.RecvMsg(&first); err != nil {
		return nil, fmt.Errorf("etcd watch on m%d: %w", i+1, err)
	}
	if created, _, err := watchResponse(first); err != nil || !created {
		return nil, fmt.Errorf("etcd watch on m%d: not created (%v)", i+1, err)
	}
	done := make(chan error, 1)
	go func() {
		for {
			var msg rawMsg
			if err := st.RecvMsg(&msg); err != nil {
				if ctx.Err() != nil {
					err = nil
				}
				done <- err
				return
			}
			_, keys, err := watchResponse(msg)
			if err != nil {
				done <- fmt.Errorf("etcd watch on m%d: %w", i+1, err)
				return
			}
			for _, k := range keys {
				seen(k)
			}
		}
	}()
	return func() error { return <-done }, nil
}

// watchResponse reads WatchResponse.created and the keys of its events.
func watchResponse(b []byte) (created bool, keys [][]byte, _ error) {
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case num == 3 && typ == protowire.VarintType: // created
			created = n != 0
		case num == 11 && typ == protowire.BytesType: // events
			return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 2 || typ != protowire.BytesType { // Event.kv
					return nil
				}
				return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
					if num == 1 && typ == protowire.BytesType { // KeyValue.key
						keys = append(keys, v)
					}
					return nil
				})
			})
		}
		return nil
	})
	return created, keys, err
}

// fields walks one protobuf message's fields: fn gets each with its bytes
// (length-delimited) or its number (varint); other types are skipped.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

// rawMsg is a message already encoded, passed through rawCodec as is.
type rawMsg []byte

// rawCodec hands gRPC encoded messages instead of generated types.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(rawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*m = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
