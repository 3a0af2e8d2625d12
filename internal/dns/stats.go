package dns

import (
	"sync/atomic"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// counters are the server's counts since it started.
type counters struct {
	queries, malformed, rejected, truncated, degraded, forwarded, forwardFailed atomic.Uint64
	noError, nxDomain, servFail, refused, formErr, notImp, other                atomic.Uint64
}

func (c *counters) count(rcode int) {
	switch rcode {
	case miekg.RcodeSuccess:
		c.noError.Add(1)
	case miekg.RcodeNameError:
		c.nxDomain.Add(1)
	case miekg.RcodeServerFailure:
		c.servFail.Add(1)
	case miekg.RcodeRefused:
		c.refused.Add(1)
	case miekg.RcodeFormatError:
		c.formErr.Add(1)
	case miekg.RcodeNotImplemented:
		c.notImp.Add(1)
	default:
		c.other.Add(1)
	}
}

// Stats are a server's counts since it started.
type Stats struct {
	// Queries counts the queries answered by the handler (the malformed
	// ones the protocol layer rejects are counted in Malformed).
	Queries uint64
	// Rcodes counts the responses by rcode name (NOERROR, NXDOMAIN, ...).
	Rcodes map[string]uint64
	// Malformed counts the packets that could not be parsed.
	Malformed uint64
	// Rejected counts the packets refused from their header alone
	// (responses, opcodes other than QUERY, not one question): FORMERR,
	// NOTIMP or no reply.
	Rejected uint64
	// Truncated counts the UDP responses sent with TC set.
	Truncated uint64
	// Degraded counts the answers given without a region that runs the
	// app, because it did not answer in time.
	Degraded uint64
	// Unreachable counts the regions (and global map lookups) that did
	// not answer in time, once per cache period each.
	Unreachable uint64
	// Forwarded and ForwardFailed count the names outside the zone
	// answered by a recursor, and those no recursor answered.
	Forwarded, ForwardFailed uint64
}

// Stats returns the server's counts.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Queries: c.queries.Load(),
		Rcodes: map[string]uint64{
			"NOERROR": c.noError.Load(), "NXDOMAIN": c.nxDomain.Load(), "SERVFAIL": c.servFail.Load(),
			"REFUSED": c.refused.Load(), "FORMERR": c.formErr.Load(), "NOTIMP": c.notImp.Load(), "other": c.other.Load(),
		},
		Malformed: c.malformed.Load(), Rejected: c.rejected.Load(), Truncated: c.truncated.Load(), Degraded: c.degraded.Load(),
		Unreachable: s.loc.Unreachable(), Forwarded: c.forwarded.Load(), ForwardFailed: c.forwardFailed.Load(),
	}
}

// Collectors are the server's Prometheus metrics, read at scrape time,
// for a registry of the embedding process (or the server's own, with
// metrics.addr).
func (s *Server) Collectors() []prometheus.Collector {
	c := &s.stats
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	rcode := func(name string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "patina_dns_responses_total", Help: "DNS responses sent, by rcode.", ConstLabels: prometheus.Labels{"rcode": name},
		}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		counter("patina_dns_queries_total", "DNS queries answered.", &c.queries),
		counter("patina_dns_malformed_total", "DNS packets that could not be parsed.", &c.malformed),
		counter("patina_dns_rejected_total", "DNS packets refused from their header alone (responses, opcodes other than QUERY, not one question).", &c.rejected),
		counter("patina_dns_truncated_total", "UDP responses sent truncated (TC).", &c.truncated),
		counter("patina_dns_degraded_total", "Answers given without a region that did not answer in time.", &c.degraded),
		counter("patina_dns_forwarded_total", "Queries outside the zone answered by a recursor.", &c.forwarded),
		counter("patina_dns_forward_failed_total", "Queries outside the zone no recursor answered.", &c.forwardFailed),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "patina_dns_unreachable_total", Help: "Regions and global map lookups that did not answer in time.",
		}, func() float64 { return float64(s.loc.Unreachable()) }),
		rcode("NOERROR", &c.noError), rcode("NXDOMAIN", &c.nxDomain), rcode("SERVFAIL", &c.servFail),
		rcode("REFUSED", &c.refused), rcode("FORMERR", &c.formErr), rcode("NOTIMP", &c.notImp), rcode("other", &c.other),
	}
}
