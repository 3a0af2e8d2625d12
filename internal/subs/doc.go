// Package subs owns change feeds: fanning out the rows each commit changed
// (local or from peers) to the clients following them. A consumer that
// does not keep up is cut off; it never slows the node down.
package subs
