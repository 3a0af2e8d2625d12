package proxy

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAppOf(t *testing.T) {
	rt := router{domain: "internal", header: "Patina-App"}
	for _, tc := range []struct {
		host, header, app, err string
	}{
		{host: "web.internal", app: "web"},
		{host: "web.internal:8000", app: "web"},
		{host: "WEB.Internal.", app: "web"},
		{host: "web.internal.:80", app: "web"},
		{host: "anything", header: "api", app: "api"},
		{host: "web.internal", header: "API", app: "api"},
		{host: "web.internal", header: "no_such!", err: `header Patina-App: "no_such!" is not an app name`},
		{host: "", err: "no Host"},
		{host: "localhost:8000", err: `host "localhost:8000": want <app>.internal`},
		{host: "internal", err: "want <app>.internal"},
		{host: ".internal", err: "want <app>.internal"},
		{host: "web.example.com", err: "want <app>.internal"},
		{host: "a.web.internal", err: `"a.web" is not an app name`},
		{host: "we_b.internal", err: `"we_b" is not an app name`},
		{host: "[::1]:8000", err: "want <app>.internal"},
		{host: "127.0.0.1", err: "want <app>.internal"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		if tc.header != "" {
			r.Header.Set("Patina-App", tc.header)
		}
		app, err := rt.appOf(r)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q %q: got %q %v, want an error with %q", tc.host, tc.header, app, err, tc.err)
		case tc.err == "" && (err != nil || app != tc.app):
			t.Errorf("%q %q: got %q %v, want %q", tc.host, tc.header, app, err, tc.app)
		}
	}
	// Without a configured header, the header means nothing.
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "web.apps.example.com:443"
	r.Header.Set("Patina-App", "api")
	if app, err := (router{domain: "apps.example.com"}).appOf(r); err != nil || app != "web" {
		t.Fatalf("multi-label domain: %q %v", app, err)
	}
}
