// Package api owns the agent's HTTP interface: the JSON wire types, which
// are the single source of the shapes clients see, and the handlers that
// turn requests into store calls. The routes and shapes follow Corrosion's
// HTTP API so its clients and habits carry over.
//
// Handlers never crash on input: every malformed request gets a 4xx with a
// JSON error naming what is wrong, and nothing partial is written.
package api
