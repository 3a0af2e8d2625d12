package cluster

// CrashTransport closes this member's data-plane socket as a crash would:
// no CONNECTION_CLOSE reaches its peers, and gossip goes on.
func (n *Node) CrashTransport() {
	n.tr.udp.Close()
	n.tr.tr.Close()
}
