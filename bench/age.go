package main

import (
	"context"
	"os"
	"path/filepath"
)

// ageResult is the scale scenario (1,000 databases, 100 active) run twice in
// a row, without and with age encryption (--age-identity): walsync's RSS
// must stay within 10%.
type ageResult struct {
	PlainIdleMB   float64 `json:"plain_idle_1000_rss_mb"`
	AgeIdleMB     float64 `json:"age_idle_1000_rss_mb"`
	PlainActiveMB float64 `json:"plain_active_rss_mb"`
	AgeActiveMB   float64 `json:"age_active_rss_mb"`
	Ratio         float64 `json:"active_ratio"`
	Pass          bool    `json:"pass"`
}

func measureAgeScale(ctx context.Context, bin, root string) (r ageResult, err error) {
	plain, err := measureScale(ctx, bin, filepath.Join(root, "age-plain"))
	if err != nil {
		return r, err
	}
	id := filepath.Join(root, "scale-age.key")
	if err := writeAgeIdentity(id); err != nil {
		return r, err
	}
	aged, err := measureScale(ctx, bin, filepath.Join(root, "age-on"), "--age-identity", id)
	if err != nil {
		return r, err
	}
	last := func(s scaleResult) float64 { return s.Idle[len(s.Idle)-1].RSSMB }
	r.PlainIdleMB, r.AgeIdleMB = last(plain), last(aged)
	r.PlainActiveMB, r.AgeActiveMB = plain.Active.RSSMB, aged.Active.RSSMB
	r.Ratio = r.AgeActiveMB / r.PlainActiveMB
	r.Pass = r.Ratio <= 1.1
	_ = os.RemoveAll(filepath.Join(root, "age-plain"))
	return r, nil
}
