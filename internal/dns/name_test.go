package dns

import (
	"strings"
	"testing"

	miekg "github.com/miekg/dns"
)

func TestParseName(t *testing.T) {
	const zone = "internal."
	for _, tc := range []struct {
		qname string
		want  name
		in    bool
	}{
		{"internal.", name{kind: nameApex}, true},
		{"INTERNAL.", name{kind: nameApex}, true},
		{"ns.internal.", name{kind: nameNS}, true},
		{"_apps.internal.", name{kind: nameApps}, true},
		{"_instances.internal.", name{kind: nameInstances}, true},
		{"web.internal.", name{kind: nameApp, app: "web"}, true},
		{"Web.Internal.", name{kind: nameApp, app: "web"}, true},
		{"global.web.internal.", name{kind: nameApp, app: "web"}, true},
		{"syd.web.internal.", name{kind: nameRegion, app: "web", region: "syd"}, true},
		{"regions.web.internal.", name{kind: nameRegionsTXT, app: "web"}, true},
		{"vms.web.internal.", name{kind: nameVMsTXT, app: "web"}, true},
		{"_http._tcp.web.internal.", name{kind: nameSRV, app: "web"}, true},
		{"abc123.vm.web.internal.", name{kind: nameVM, app: "web", id: "abc123"}, true},
		{"top1.nearest.of.web.internal.", name{kind: nameNearest, app: "web", n: 1}, true},
		{"top999.nearest.of.web.internal.", name{kind: nameNearest, app: "web", n: 999}, true},
		{"top0.nearest.of.web.internal.", name{}, true},
		{"top01.nearest.of.web.internal.", name{}, true},
		{"top1000.nearest.of.web.internal.", name{}, true},
		{"top-1.nearest.of.web.internal.", name{}, true},
		{"topx.nearest.of.web.internal.", name{}, true},
		{"top.nearest.of.web.internal.", name{}, true},
		{"top2.nearest.to.web.internal.", name{}, true},
		{"_udp._tcp.web.internal.", name{}, true},
		{"a.b.web.internal.", name{}, true},
		{"a.b.c.d.web.internal.", name{}, true},
		{"under_score.internal.", name{}, true},
		{"-web.internal.", name{}, true},
		{`we\.b.internal.`, name{}, true},
		{"syd.-web.internal.", name{}, true},
		{"_apps.web.internal.", name{}, true},
		{"x_y.web.internal.", name{}, true},
		{"example.com.", name{}, false},
		{"notinternal.", name{}, false},
		{"internal.com.", name{}, false},
		{".", name{}, false},
	} {
		got, in := parseName(tc.qname, zone)
		if got != tc.want || in != tc.in {
			t.Errorf("%s: got %+v in=%t, want %+v in=%t", tc.qname, got, in, tc.want, tc.in)
		}
	}
	if got, in := parseName("web.svc.example.", "svc.example."); !in || got != (name{kind: nameApp, app: "web"}) {
		t.Errorf("a two-label zone: %+v %t", got, in)
	}
}

func TestTXTStrings(t *testing.T) {
	r := &resolver{ttl: 5}
	if rrs := r.txt("x.internal.", nil); len(rrs) != 0 {
		t.Fatalf("no items: %v", rrs)
	}
	var items []string
	for i := range 4000 {
		items = append(items, strings.Repeat("m", i%40+1))
	}
	items = append(items, strings.Repeat("z", 300), `quote"back\slash`)
	rrs := r.txt("x.internal.", items)
	var got []string
	for _, rr := range rrs {
		txt := rr.(*miekg.TXT)
		if miekg.Len(txt) > 65535 {
			t.Fatalf("a TXT record of %d bytes", miekg.Len(txt))
		}
		for _, s := range txt.Txt {
			if len(s) > 255 {
				t.Fatalf("a string of %d bytes", len(s))
			}
			got = append(got, strings.Split(s, ",")...)
		}
	}
	if len(rrs) < 2 {
		t.Errorf("%d items in %d record(s): want them spread over several", len(items), len(rrs))
	}
	if len(got) != len(items) || got[0] != items[0] || got[3999] != items[3999] || got[4000] != strings.Repeat("z", 255) {
		t.Fatalf("items did not survive: %d of %d", len(got), len(items))
	}
	// Escaped for the presentation format: packed, the bytes are literal.
	msg := new(miekg.Msg)
	msg.SetQuestion("x.internal.", miekg.TypeTXT)
	msg.Answer = r.txt("x.internal.", []string{`quote"back\slash`})
	data, err := msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `quote"back\slash`) {
		t.Fatalf("escaped bytes on the wire: %q", data)
	}
}
