package shipper

import "github.com/walsync/walsync/capture"

// StagedHead reads the head of db's shared staging (staged.pos) without the
// capture lock, as a process that died there would leave it.
func StagedHead(s *Shipper, db string) (capture.Head, bool, error) {
	st, err := s.stage(db)
	if err != nil {
		return capture.Head{}, false, err
	}
	sp, ok, err := st.readStagedPos()
	return capture.Head{Pos: sp.pos, WAL: sp.wal, Resync: sp.resync}, ok, err
}
