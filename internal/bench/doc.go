// Package bench measures a running region end to end, through the same
// HTTP API and change feed clients use: propagation latency from a write
// request to its visibility on every node, write throughput, and catch-up.
// Regions come from devcluster; figures are computed here, printed by
// `patina bench`.
package bench
