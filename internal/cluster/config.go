package cluster

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/patina-db/patina/internal/watchdog"
)

// Config configures one member of a cluster.
type Config struct {
	// Name identifies the member in the cluster (default: the host name
	// plus the gossip port).
	Name string
	// Cluster names the cluster; members of different clusters never
	// exchange anything (regional clusters and the global one never mix).
	Cluster string
	// Region is where the member runs.
	Region string
	// GossipAddr is memberlist's UDP and TCP address (port 0: pick one).
	GossipAddr string
	// AdvertiseAddr is the gossip address announced to peers when it differs.
	AdvertiseAddr string
	// QUICAddr is the data plane's UDP address (port 0: pick one).
	QUICAddr string
	// Bootstrap lists gossip addresses of members to join through. Empty:
	// this member starts a cluster.
	Bootstrap []string
	// SecretKey, when set (16, 24 or 32 bytes), encrypts gossip.
	SecretKey []byte
	// AcceptKeys are more keys gossip from peers may be encrypted with,
	// while a key is being rotated; SecretKey is the one this member
	// sends with.
	AcceptKeys [][]byte
	// Credentials are the cluster CA and this member's certificate.
	Credentials *Credentials
	// APIAddr and GRPCAddr are announced in the member's metadata.
	APIAddr, GRPCAddr string

	// Fanout is how many random members each broadcast goes to, at
	// least; see EffectiveFanout.
	Fanout int
	// DirectLimit: while a member has at most this many others, it sends
	// its versions straight to all of them and nothing is relayed
	// (default 16; negative: always epidemic).
	DirectLimit int
	// TransmitMult scales the hop limit: TransmitMult·⌈log₂(n+1)⌉.
	TransmitMult int
	// BatchDelay is an extra wait, under load, for more committed versions
	// to join a batch. Default 0: batches form on their own from what
	// commits while the previous batch is on the wire.
	BatchDelay time.Duration
	// QueueLimit bounds the broadcast queue; what it drops, sync repairs.
	QueueLimit int
	// SyncInterval is how often (±25%) a member syncs with SyncPeers peers.
	SyncInterval time.Duration
	SyncPeers    int
	// SyncServeLimit bounds concurrent sync exchanges this member serves.
	SyncServeLimit int
	// SyncMaxVersions bounds the versions one sync exchange sends.
	SyncMaxVersions int
	// RetryInterval is how often versions that failed to apply are retried.
	RetryInterval time.Duration
	// RejoinInterval is how often (±25%) a member tries to rejoin members
	// it holds dead (see rejoinLoop); default 30 s, 1 s when Local.
	RejoinInterval time.Duration
	// Local selects memberlist's timings for a single host (tests, dev).
	Local bool

	// Watchdog watches the broadcast, apply, sync and retry loops (nil:
	// not watched).
	Watchdog *watchdog.Watchdog
	// OnLag, when set, is told every replication lag measured (see
	// Node.P99Lag), for a histogram. It runs on the apply loop and must
	// be quick.
	OnLag func(time.Duration)
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Fanout == 0 {
		c.Fanout = 3
	}
	if c.DirectLimit == 0 {
		c.DirectLimit = 16
	}
	if c.TransmitMult == 0 {
		c.TransmitMult = 2
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = 20_000
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = time.Second
	}
	if c.SyncPeers == 0 {
		c.SyncPeers = 2
	}
	if c.SyncServeLimit == 0 {
		c.SyncServeLimit = 4
	}
	if c.SyncMaxVersions == 0 {
		c.SyncMaxVersions = 50_000
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = 30 * time.Second
		if c.Local {
			c.RejoinInterval = time.Second
		}
	}
}

// Validate checks what defaults cannot fill.
func (c *Config) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("gossip.cluster is required"))
	}
	if c.Credentials == nil {
		errs = append(errs, errors.New("gossip.tls is required: the data plane has no plaintext mode"))
	}
	for name, addr := range map[string]string{"gossip.addr": c.GossipAddr, "gossip.quic_addr": c.QUICAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, addr, err))
		}
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		errs = append(errs, fmt.Errorf("gossip.secret_key is %d bytes; want 16, 24 or 32", n))
	}
	for i, k := range c.AcceptKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip.accept_keys[%d] is %d bytes; want 16, 24 or 32", i, n))
		}
	}
	if len(c.AcceptKeys) > 0 && len(c.SecretKey) == 0 {
		errs = append(errs, errors.New("gossip.accept_keys needs gossip.secret_key: without it gossip is not encrypted"))
	}
	if c.Fanout < 1 || c.SyncPeers < 1 || c.QueueLimit < 1 {
		errs = append(errs, errors.New("gossip.fanout, sync_peers and queue_limit must be positive"))
	}
	return errors.Join(errs...)
}
