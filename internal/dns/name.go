package dns

import (
	"strconv"
	"strings"

	"github.com/patina-db/patina/regional"
)

// nameKind is what a name in the zone asks for.
type nameKind int

const (
	// nameInvalid is in the zone but can never exist: NXDOMAIN.
	nameInvalid nameKind = iota
	nameApex
	// nameNS is ns.<zone>, the zone's name server.
	nameNS
	// nameApps is _apps.<zone>: every app.
	nameApps
	// nameInstances is _instances.<zone>: every machine.
	nameInstances
	// nameApp is <app>.<zone> and global.<app>.<zone>.
	nameApp
	// nameRegion is <region>.<app>.<zone>.
	nameRegion
	// nameNearest is top<N>.nearest.of.<app>.<zone>.
	nameNearest
	// nameVM is <machine>.vm.<app>.<zone>.
	nameVM
	// nameSRV is _http._tcp.<app>.<zone>.
	nameSRV
	// nameRegionsTXT is regions.<app>.<zone>.
	nameRegionsTXT
	// nameVMsTXT is vms.<app>.<zone>.
	nameVMsTXT
)

// maxNearest bounds N in top<N>.nearest.of.<app>.
const maxNearest = 999

// name is a parsed name in the zone.
type name struct {
	kind   nameKind
	app    string
	region string // nameRegion
	id     string // nameVM
	n      int    // nameNearest
}

// parseName parses qname (fully qualified, any case) against zone (fully
// qualified, lower case). in is false when qname is outside the zone.
// It is a pure function of the name: whether the app, region or machine
// exists is for the resolver to find out.
func parseName(qname, zone string) (n name, in bool) {
	q := strings.ToLower(qname)
	if q == zone {
		return name{kind: nameApex}, true
	}
	if !strings.HasSuffix(q, zone) || len(q) == len(zone) || q[len(q)-len(zone)-1] != '.' {
		return name{}, false
	}
	labels := strings.Split(q[:len(q)-len(zone)-1], ".")
	last := len(labels) - 1
	app := labels[last]
	switch len(labels) {
	case 1:
		switch app {
		case "ns":
			return name{kind: nameNS}, true
		case "_apps":
			return name{kind: nameApps}, true
		case "_instances":
			return name{kind: nameInstances}, true
		}
	}
	if !regional.ValidName(app) {
		return name{}, true
	}
	switch len(labels) {
	case 1:
		return name{kind: nameApp, app: app}, true
	case 2:
		switch l := labels[0]; l {
		case "global":
			return name{kind: nameApp, app: app}, true
		case "regions":
			return name{kind: nameRegionsTXT, app: app}, true
		case "vms":
			return name{kind: nameVMsTXT, app: app}, true
		default:
			if regional.ValidName(l) {
				return name{kind: nameRegion, app: app, region: l}, true
			}
		}
	case 3:
		if labels[0] == "_http" && labels[1] == "_tcp" {
			return name{kind: nameSRV, app: app}, true
		}
		if labels[1] == "vm" && regional.ValidID(labels[0]) {
			return name{kind: nameVM, app: app, id: labels[0]}, true
		}
	case 4:
		if labels[1] == "nearest" && labels[2] == "of" {
			if k, ok := topN(labels[0]); ok {
				return name{kind: nameNearest, app: app, n: k}, true
			}
		}
	}
	return name{}, true
}

// topN parses top<N>: N from 1 to maxNearest, in plain decimal.
func topN(label string) (int, bool) {
	digits, ok := strings.CutPrefix(label, "top")
	if !ok || digits == "" || digits[0] == '0' || len(digits) > 3 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	k, err := strconv.Atoi(digits)
	if err != nil || k < 1 || k > maxNearest {
		return 0, false
	}
	return k, true
}
