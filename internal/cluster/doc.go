// Package cluster turns agents into a cluster: membership over SWIM
// (hashicorp/memberlist), a QUIC data plane with mutual TLS against the
// cluster CA, broadcast of freshly committed versions, and anti-entropy
// sync that repairs whatever broadcast lost.
//
// The decisions (whom to send to, what to drop from a full queue, how far a
// changeset may travel, what a peer lacks) are small pure functions and
// types in broadcast.go and in internal/crdt; the rest is I/O. Every
// goroutine the package starts stops when the Node's context ends.
package cluster
