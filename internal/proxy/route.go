package proxy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/patina-db/patina/regional"
)

// router finds the app a request is for: from the configured header when
// it is set and present, else from the Host, <app>.<domain>.
type router struct {
	domain string // lower case, without dots at either end
	header string // "" when routing by header is off
}

// appOf returns the app a request names, or an error saying why the
// request names none (answered 400).
func (rt router) appOf(r *http.Request) (string, error) {
	if rt.header != "" {
		if v := r.Header.Get(rt.header); v != "" {
			app := strings.ToLower(strings.TrimSpace(v))
			if !regional.ValidName(app) {
				return "", fmt.Errorf("header %s: %q is not an app name (a DNS label)", rt.header, v)
			}
			return app, nil
		}
	}
	return rt.appOfHost(r.Host)
}

// appOfHost reads <app>.<domain>[:port]; a trailing dot is allowed.
func (rt router) appOfHost(hostport string) (string, error) {
	if hostport == "" {
		return "", fmt.Errorf("no Host: want <app>.%s", rt.domain)
	}
	host := stripPort(hostport)
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	app, ok := strings.CutSuffix(host, "."+rt.domain)
	if !ok || app == "" {
		return "", fmt.Errorf("host %q: want <app>.%s", hostport, rt.domain)
	}
	if !regional.ValidName(app) {
		return "", fmt.Errorf("host %q: %q is not an app name (a single DNS label before .%s)", hostport, app, rt.domain)
	}
	return app, nil
}

// stripPort drops a :port from a Host header, IPv6 literals included.
func stripPort(hostport string) string {
	if strings.HasPrefix(hostport, "[") {
		if i := strings.IndexByte(hostport, ']'); i > 0 {
			return hostport[1:i]
		}
		return hostport
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.Count(hostport, ":") == 1 {
		return hostport[:i]
	}
	return hostport
}
