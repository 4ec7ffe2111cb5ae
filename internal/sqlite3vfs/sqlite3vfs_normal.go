package sqlite3vfs

/*
   #cgo darwin LDFLAGS: -Wl,-undefined,dynamic_lookup
*/
import "C"
