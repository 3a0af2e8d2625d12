package global

import (
	"math"
	"sort"
)

// Place is a region and where it is.
type Place struct {
	Name                string
	Latitude, Longitude float64
}

// Nearest orders regions by great-circle distance from the region named
// from, nearest first; from itself comes first when listed. Equal
// distances (and regions whose location is unknown, which sort last)
// fall back to name order, so every caller ranks the same way. When from
// is not listed, regions are in name order.
func Nearest(from string, regions []Place) []Place {
	out := append([]Place(nil), regions...)
	var origin *Place
	for i := range regions {
		if regions[i].Name == from {
			origin = &regions[i]
		}
	}
	dist := func(p Place) float64 {
		switch {
		case origin == nil:
			return 0
		case p.Name == from:
			return -1
		case !known(p) || !known(*origin):
			return math.Inf(1)
		}
		return Distance(origin.Latitude, origin.Longitude, p.Latitude, p.Longitude)
	}
	sort.SliceStable(out, func(i, j int) bool {
		di, dj := dist(out[i]), dist(out[j])
		if di != dj {
			return di < dj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// known reports whether a place has a location: (0, 0) is the directory's
// "not set".
func known(p Place) bool { return p.Latitude != 0 || p.Longitude != 0 }

// earthRadiusKm is the mean radius of the earth.
const earthRadiusKm = 6371.0

// Distance is the great-circle distance in kilometres between two points
// given in degrees (the haversine formula).
func Distance(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dlat := (lat2 - lat1) * rad
	dlon := (lon2 - lon1) * rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * earthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}
