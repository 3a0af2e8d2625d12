package dns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/locate"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional"
)

// Locator is where every answer comes from; *locate.Locator is the one
// the server uses. Each method is cached and bounded in time by it.
type Locator interface {
	// Region is the local region's name.
	Region() string
	// App is what the global map says of an app; locate.ErrUnknownApp
	// when it lists no region.
	App(ctx context.Context, app string) (*globalv1.App, error)
	// Apps lists every app of the global map.
	Apps(ctx context.Context) ([]*globalv1.App, error)
	// Regions is the region directory, nearest first.
	Regions(ctx context.Context) ([]*globalv1.Region, error)
	// Machines are an app's machines in one region.
	Machines(ctx context.Context, app, region string, healthyOnly bool) ([]*regionalv1.Machine, error)
	// Everywhere are an app's machines in every region that runs it,
	// nearest region first, naming the regions that did not answer.
	Everywhere(ctx context.Context, app string, healthyOnly bool) (locate.Answer, error)
	// Unreachable counts the regions that did not answer in time.
	Unreachable() uint64
}

// result is the resolver's answer to one question, before it becomes a
// message.
type result struct {
	rcode  int
	answer []miekg.RR
	extra  []miekg.RR
	// degraded says some region that runs the app did not answer and
	// was left out.
	degraded bool
}

// resolver turns questions in the zone into records.
type resolver struct {
	loc    Locator
	zone   string // fully qualified, lower case
	ttl    uint32
	serial uint32
	// ns are the addresses ns.<zone> answers: the server's own, when it
	// listens on a specific IP.
	ns []netip.Addr
	// rotation spreads answers over a region's machines.
	rotation atomic.Uint32
}

// servfail is a failed answer: a region or the global map that the
// question depends on whole did not answer.
var servfail = result{rcode: miekg.RcodeServerFailure}

// nxdomain is the answer for a name that does not exist.
var nxdomain = result{rcode: miekg.RcodeNameError}

// resolve answers q, a question whose name is in the zone.
func (r *resolver) resolve(ctx context.Context, q miekg.Question, n name) result {
	switch n.kind {
	case nameApex:
		return r.only(q, []miekg.RR{r.soa(q.Name), r.nsRecord(q.Name)}, nil)
	case nameNS:
		return r.only(q, r.addresses(q.Name, r.ns), nil)
	case nameApps:
		return r.apps(ctx, q)
	case nameInstances:
		return r.instances(ctx, q)
	case nameInvalid:
		return nxdomain
	}
	ans, res, ok := r.everywhere(ctx, n.app)
	if !ok {
		return res
	}
	degraded := len(ans.Unreachable) > 0
	switch n.kind {
	case nameApp:
		return r.machineAddresses(q, ans.Regions, degraded)
	case nameRegion:
		return r.region(ctx, q, n, ans)
	case nameNearest:
		var near []locate.RegionMachines
		for _, rm := range ans.Regions {
			if len(near) < n.n && slices.ContainsFunc(rm.Machines, (*regionalv1.Machine).GetHealthy) {
				near = append(near, rm)
			}
		}
		return r.machineAddresses(q, near, degraded)
	case nameVM:
		for _, rm := range ans.Regions {
			for _, m := range rm.Machines {
				if m.GetId() != n.id || m.GetState() == regional.StateDestroyed {
					continue
				}
				var rrs []miekg.RR
				if m.GetState() == regional.StateStarted {
					if a, err := netip.ParseAddr(m.GetAddress()); err == nil {
						rrs = r.addresses(q.Name, []netip.Addr{a})
					}
				}
				return r.only(q, rrs, nil)
			}
		}
		if degraded {
			return servfail // it may run in the region that did not answer
		}
		return nxdomain
	case nameSRV:
		return r.srv(q, n.app, ans, degraded)
	case nameRegionsTXT:
		a, err := r.loc.App(ctx, n.app)
		switch {
		case errors.Is(err, locate.ErrUnknownApp):
			return r.only(q, nil, nil) // only the local region knows it yet
		case err != nil:
			return servfail
		}
		var items []string
		for _, ar := range a.GetRegions() {
			items = append(items, ar.GetRegion())
		}
		return r.only(q, r.txt(q.Name, items), nil)
	case nameVMsTXT:
		var items []string
		for _, rm := range ans.Regions {
			for _, m := range rm.Machines {
				if m.GetState() != regional.StateDestroyed {
					items = append(items, m.GetId()+" "+rm.Region)
				}
			}
		}
		res := r.only(q, r.txt(q.Name, items), nil)
		res.degraded = degraded
		return res
	}
	return nxdomain
}

// everywhere finds app's machines in every region. ok is false when the
// answer is decided already: NXDOMAIN for an app no region runs,
// SERVFAIL when nothing that could say answered.
func (r *resolver) everywhere(ctx context.Context, app string) (locate.Answer, result, bool) {
	ans, err := r.loc.Everywhere(ctx, app, false)
	switch {
	case errors.Is(err, locate.ErrUnknownApp):
		if _, err := r.loc.App(ctx, app); err != nil && !errors.Is(err, locate.ErrUnknownApp) {
			// The global map did not answer and the local region does
			// not run it: it may run elsewhere.
			return ans, servfail, false
		}
		return ans, nxdomain, false
	case err != nil:
		return ans, servfail, false
	case len(ans.Regions) == 0:
		return ans, servfail, false // every region that runs it is unreachable
	}
	return ans, result{}, true
}

// region answers <region>.<app>: that region's healthy machines. A
// region the global map does not list for the app (it may lag) is asked
// anyway when the directory knows it.
func (r *resolver) region(ctx context.Context, q miekg.Question, n name, ans locate.Answer) result {
	for _, rm := range ans.Regions {
		if rm.Region == n.region {
			return r.machineAddresses(q, []locate.RegionMachines{rm}, false)
		}
	}
	if slices.Contains(ans.Unreachable, n.region) {
		return servfail
	}
	known := n.region == r.loc.Region()
	if !known {
		dir, err := r.loc.Regions(ctx)
		if err != nil {
			return servfail
		}
		known = slices.ContainsFunc(dir, func(g *globalv1.Region) bool { return g.GetName() == n.region })
	}
	if !known {
		return nxdomain
	}
	ms, err := r.loc.Machines(ctx, n.app, n.region, false)
	if err != nil {
		return servfail
	}
	return r.machineAddresses(q, []locate.RegionMachines{{Region: n.region, Machines: ms}}, false)
}

// machineAddresses answers with the addresses of the healthy machines
// of regions, in the regions' order; each region's machines are rotated
// from one answer to the next so that clients taking the first address
// spread over them.
func (r *resolver) machineAddresses(q miekg.Question, regions []locate.RegionMachines, degraded bool) result {
	var addrs []netip.Addr
	if q.Qtype == miekg.TypeA || q.Qtype == miekg.TypeAAAA || q.Qtype == miekg.TypeANY {
		rot := uint(r.rotation.Add(1))
		for _, rm := range regions {
			healthy := healthyMachines(rm.Machines)
			for i := range healthy {
				m := healthy[(uint(i)+rot)%uint(len(healthy))]
				if a, err := netip.ParseAddr(m.GetAddress()); err == nil && !slices.Contains(addrs, a.Unmap()) {
					addrs = append(addrs, a.Unmap())
				}
			}
		}
	}
	res := r.only(q, r.addresses(q.Name, addrs), nil)
	res.degraded = degraded
	return res
}

// srv answers _http._tcp.<app>: one SRV record per healthy machine, the
// nearest region at priority 0, the next at 1 and so on, each target
// <machine>.vm.<app>.<zone> with its address in the additional section.
func (r *resolver) srv(q miekg.Question, app string, ans locate.Answer, degraded bool) result {
	var answer, extra []miekg.RR
	if q.Qtype == miekg.TypeSRV || q.Qtype == miekg.TypeANY {
		prio := 0 // counts only regions that answer with machines
		for _, rm := range ans.Regions {
			listed := false
			for _, m := range healthyMachines(rm.Machines) {
				// A machine with no address to give for its target, or no
				// port, cannot be reached through this answer: left out,
				// as the A and AAAA answers leave it out.
				a, err := netip.ParseAddr(m.GetAddress())
				if err != nil || m.GetPort() < 1 || m.GetPort() > 65535 {
					continue
				}
				target := m.GetId() + ".vm." + app + "." + r.zone
				answer = append(answer, &miekg.SRV{
					Hdr:      r.header(q.Name, miekg.TypeSRV),
					Priority: uint16(min(prio, 65535)), Weight: 10, Port: uint16(m.GetPort()), Target: target,
				})
				extra = append(extra, r.addresses(target, []netip.Addr{a.Unmap()})...)
				listed = true
			}
			if listed {
				prio++
			}
		}
	}
	res := r.only(q, answer, extra)
	res.degraded = degraded
	return res
}

// apps answers _apps: every app the global map knows.
func (r *resolver) apps(ctx context.Context, q miekg.Question) result {
	apps, err := r.loc.Apps(ctx)
	if err != nil {
		return servfail
	}
	items := make([]string, 0, len(apps))
	for _, a := range apps {
		items = append(items, a.GetName())
	}
	return r.only(q, r.txt(q.Name, items), nil)
}

// instancesParallel bounds the apps asked at once for _instances.
const instancesParallel = 8

// instances answers _instances: every machine of every app the global
// map knows, as "id app region address port state".
func (r *resolver) instances(ctx context.Context, q miekg.Question) result {
	apps, err := r.loc.Apps(ctx)
	if err != nil {
		return servfail
	}
	answers := make([]locate.Answer, len(apps))
	var wg sync.WaitGroup
	sem := make(chan struct{}, instancesParallel)
	for i, a := range apps {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// An app gone since the list is simply left out.
			answers[i], _ = r.loc.Everywhere(ctx, a.GetName(), false)
		})
	}
	wg.Wait()
	var items []string
	degraded := false
	for i, ans := range answers {
		degraded = degraded || len(ans.Unreachable) > 0
		for _, rm := range ans.Regions {
			for _, m := range rm.Machines {
				if m.GetState() == regional.StateDestroyed {
					continue
				}
				items = append(items, strings.Join([]string{m.GetId(), apps[i].GetName(), rm.Region, m.GetAddress(),
					strconv.Itoa(int(m.GetPort())), m.GetState()}, " "))
			}
		}
	}
	res := r.only(q, r.txt(q.Name, items), nil)
	res.degraded = degraded
	return res
}

// only keeps the records of the question's type (every one for ANY); the
// name exists, so no record of that type is NOERROR with no answer.
func (r *resolver) only(q miekg.Question, rrs, extra []miekg.RR) result {
	if q.Qtype == miekg.TypeANY {
		return result{rcode: miekg.RcodeSuccess, answer: rrs, extra: extra}
	}
	var out []miekg.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		extra = nil
	}
	return result{rcode: miekg.RcodeSuccess, answer: out, extra: extra}
}

func (r *resolver) header(owner string, rrtype uint16) miekg.RR_Header {
	return miekg.RR_Header{Name: owner, Rrtype: rrtype, Class: miekg.ClassINET, Ttl: r.ttl}
}

// addresses are A records for IPv4 addresses and AAAA records for IPv6.
func (r *resolver) addresses(owner string, addrs []netip.Addr) []miekg.RR {
	out := make([]miekg.RR, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			out = append(out, &miekg.A{Hdr: r.header(owner, miekg.TypeA), A: a.AsSlice()})
		} else {
			out = append(out, &miekg.AAAA{Hdr: r.header(owner, miekg.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return out
}

// soa is the zone's SOA record: the name server ns.<zone>, refresh,
// retry and expire for secondaries (which this zone does not serve), and
// the TTL as the minimum, so that negative answers are cached as long as
// positive ones.
func (r *resolver) soa(owner string) *miekg.SOA {
	return &miekg.SOA{
		Hdr: r.header(owner, miekg.TypeSOA),
		Ns:  "ns." + r.zone, Mbox: "hostmaster." + r.zone,
		Serial: r.serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: r.ttl,
	}
}

func (r *resolver) nsRecord(owner string) *miekg.NS {
	return &miekg.NS{Hdr: r.header(owner, miekg.TypeNS), Ns: "ns." + r.zone}
}

// maxTXTString is the longest character-string a TXT record holds.
const maxTXTString = 255

// maxTXTData bounds one TXT record's data, under the 65535 a record can
// carry; more items go to another record.
const maxTXTData = 60000

// txt packs comma-separated items into TXT character-strings of at most
// 255 bytes, never splitting an item (one longer than 255 bytes is cut),
// so that a reader splits each string on commas. No items, no record.
func (r *resolver) txt(owner string, items []string) []miekg.RR {
	var out []miekg.RR
	var strs []string
	var cur strings.Builder
	size := 0
	flush := func() {
		if cur.Len() > 0 {
			strs = append(strs, cur.String())
			size += cur.Len() + 1
			cur.Reset()
		}
		if size > maxTXTData {
			out = append(out, &miekg.TXT{Hdr: r.header(owner, miekg.TypeTXT), Txt: strs})
			strs, size = nil, 0
		}
	}
	for _, it := range items {
		it = escapeTXT(it)
		if len(it) > maxTXTString {
			it = it[:maxTXTString]
		}
		if cur.Len() > 0 && cur.Len()+1+len(it) > maxTXTString {
			flush()
		}
		if cur.Len() > 0 {
			cur.WriteByte(',')
		}
		cur.WriteString(it)
	}
	flush()
	if len(strs) > 0 {
		out = append(out, &miekg.TXT{Hdr: r.header(owner, miekg.TypeTXT), Txt: strs})
	}
	return out
}

// escapeTXT keeps an item's bytes literal: the TXT type reads '\\' and
// '"' as escapes in its presentation strings.
func escapeTXT(s string) string {
	if !strings.ContainsAny(s, `\"`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

// healthyMachines are the machines that are started with every check
// passing.
func healthyMachines(ms []*regionalv1.Machine) []*regionalv1.Machine {
	out := make([]*regionalv1.Machine, 0, len(ms))
	for _, m := range ms {
		if m.GetHealthy() {
			out = append(out, m)
		}
	}
	return out
}
