//go:build SQLITE3VFS_LOADABLE_EXT

// The entry point SQLite finds by the file name walsync.so.
#include <stdlib.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

extern char* walsyncExtInit(void);

int sqlite3_walsync_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
	SQLITE_EXTENSION_INIT2(pApi);
	char *err = walsyncExtInit();
	if (err) {
		*pzErrMsg = sqlite3_mprintf("%s", err);
		free(err);
		return SQLITE_ERROR;
	}
	return SQLITE_OK_LOAD_PERMANENTLY;
}
