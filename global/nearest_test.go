package global

import (
	"math"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

var places = []Place{
	{"syd", -33.87, 151.21}, {"iad", 38.94, -77.46}, {"ams", 52.37, 4.90}, {"fra", 50.11, 8.68}, {"nowhere", 0, 0},
}

func names(ps []Place) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestNearest(t *testing.T) {
	for from, want := range map[string][]string{
		"ams":     {"ams", "fra", "iad", "syd", "nowhere"},
		"syd":     {"syd", "iad", "fra", "ams", "nowhere"},
		"iad":     {"iad", "ams", "fra", "syd", "nowhere"},
		"lhr":     {"ams", "fra", "iad", "nowhere", "syd"}, // unknown origin: by name
		"nowhere": {"nowhere", "ams", "fra", "iad", "syd"},
	} {
		if got := names(Nearest(from, places)); !slices.Equal(got, want) {
			t.Errorf("from %s: %v, want %v", from, got, want)
		}
	}
}

func TestDistance(t *testing.T) {
	// Amsterdam to Sydney is about 16,600 km.
	if d := Distance(52.37, 4.90, -33.87, 151.21); math.Abs(d-16640) > 100 {
		t.Fatalf("ams-syd %.0f km", d)
	}
	if d := Distance(10, 20, 10, 20); d != 0 {
		t.Fatalf("a point to itself: %f", d)
	}
}

// Every caller must rank alike: the order does not depend on the order
// regions are listed in, and the origin comes first.
func TestNearestIsAFunctionOfTheSet(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 8).Draw(t, "n")
		var ps []Place
		for i := range n {
			ps = append(ps, Place{
				Name:      string(rune('a' + i)),
				Latitude:  float64(rapid.IntRange(-90, 90).Draw(t, "lat")),
				Longitude: float64(rapid.IntRange(-180, 180).Draw(t, "lon")),
			})
		}
		from := ps[rapid.IntRange(0, n-1).Draw(t, "from")].Name
		shuffled := rapid.Permutation(ps).Draw(t, "perm")
		a, b := names(Nearest(from, ps)), names(Nearest(from, shuffled))
		if !slices.Equal(a, b) {
			t.Fatalf("%v vs %v", a, b)
		}
		if a[0] != from {
			t.Fatalf("origin %s not first: %v", from, a)
		}
	})
}
