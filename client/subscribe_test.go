package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
)

// TestSubscriptionStreamBreaks drives the client against a server that
// breaks its streams on purpose: a break after the rows is resumed from
// the last change, with nothing repeated; a break in the middle of the
// rows is an error, since resuming would repeat what the missing rows
// hold.
func TestSubscriptionStreamBreaks(t *testing.T) {
	var resumes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("patina-query-id", "s1")
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == http.MethodPost && strings.Contains(string(body), "cut"):
			fmt.Fprintln(w, `{"columns":["id"]}`)
			fmt.Fprintln(w, `{"row":[1,["m1"]]}`) // then the connection ends
		case r.Method == http.MethodPost:
			fmt.Fprintln(w, `{"columns":["id"]}`)
			fmt.Fprintln(w, `{"row":[1,["m1"]]}`)
			fmt.Fprintln(w, `{"eoq":{"time":0,"change_id":1}}`)
			fmt.Fprintln(w, `{"change":["insert",2,["m2"],2]}`) // then the connection ends
		case r.URL.Path == "/v1/subscriptions/s1" && r.URL.Query().Get("from") == "2":
			resumes.Add(1)
			fmt.Fprintln(w, `{"change":["update",2,["m2"],3]}`)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.Error(w, `{"error":"unexpected request"}`, http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, _ := client.New(srv.URL, "")
	sub, err := c.Subscribe(ctx, client.Statement{Query: "SELECT id FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 && sub.Next() {
		ev := sub.Event()
		switch {
		case ev.Row != nil:
			got = append(got, fmt.Sprint("row ", ev.Row.Cells))
		case ev.Ready:
			got = append(got, "ready")
		case ev.Change != nil:
			got = append(got, fmt.Sprint(ev.Change.Kind, " ", ev.Change.ChangeID))
		}
	}
	sub.Close()
	if want := "row [m1],ready,insert 2,update 3"; strings.Join(got, ",") != want || resumes.Load() != 1 {
		t.Fatalf("events %v after %d resumes, want %s after 1", got, resumes.Load(), want)
	}

	sub, err = c.Subscribe(ctx, client.Statement{Query: "SELECT id FROM machines -- cut"})
	if err != nil {
		t.Fatal(err)
	}
	for sub.Next() {
	}
	if sub.Err() == nil || !strings.Contains(sub.Err().Error(), "before all its rows") {
		t.Fatalf("a stream cut inside its rows ended with %v", sub.Err())
	}
}

// TestSubscriptionEndReason: when the agent ends a subscription (here,
// its columns changed under SELECT *) it says why in an error event and
// forgets it, so the resume that follows is refused. The error the
// caller gets carries the agent's reason, not only the refusal.
func TestSubscriptionEndReason(t *testing.T) {
	const reason = "subscription s1 ended: the query's columns changed from [id] to [id extra]"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("patina-query-id", "s1")
		if r.Method == http.MethodPost {
			fmt.Fprintln(w, `{"columns":["id"]}`)
			fmt.Fprintln(w, `{"eoq":{"time":0,"change_id":0}}`)
			fmt.Fprintf(w, "{\"error\":%q}\n", reason)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintln(w, `{"error":"no such subscription: s1"}`)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _ := client.New(srv.URL, "")
	sub, err := c.Subscribe(ctx, client.Statement{Query: "SELECT * FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for sub.Next() {
	}
	if sub.Err() == nil || !strings.Contains(sub.Err().Error(), "columns changed") || !strings.Contains(sub.Err().Error(), "no such subscription") {
		t.Fatalf("subscription ended with %v, want the agent's reason and the refusal", sub.Err())
	}
}

// TestCloseDuringResume: Close ends a Next that is resuming (the stream
// broke and the agent does not answer the resume): the request in
// flight is cancelled, and Next returns false with no error.
func TestCloseDuringResume(t *testing.T) {
	resumed := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("patina-query-id", "s1")
		if r.Method == http.MethodPost {
			io.Copy(io.Discard, r.Body)
			fmt.Fprintln(w, `{"columns":["id"]}`)
			fmt.Fprintln(w, `{"eoq":{"time":0,"change_id":0}}`)
			return // the stream breaks: the client resumes
		}
		select {
		case resumed <- struct{}{}:
		default:
		}
		select { // a wedged agent: the resume gets no answer
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, _ := client.New(srv.URL, "")
	sub, err := c.Subscribe(context.Background(), client.Statement{Query: "SELECT id FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Next() || !sub.Event().Ready {
		t.Fatal("no ready event")
	}
	done := make(chan bool, 1)
	go func() { done <- sub.Next() }()
	select {
	case <-resumed:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not resume")
	}
	sub.Close()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Next returned an event after Close")
		}
		if err := sub.Err(); err != nil {
			t.Fatalf("closed, yet Err is %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked 5s after Close: the resume request in flight is not cancelled")
	}
}
