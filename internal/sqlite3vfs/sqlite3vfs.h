#ifndef SQLITE3VFS_H
#define SQLITE3VFS_H

#ifdef SQLITE3VFS_LOADABLE_EXT
#include "sqlite3ext.h"
#else
#include "sqlite3-binding.h"
#endif

typedef struct wsvfsFile {
  sqlite3_file base; /* IO methods */
  sqlite3_uint64 id; /* Go object id  */
  /* walsync fork: shared memory (see FORK.md). */
  const char *zName;     /* the name SQLite opened the file with */
  int flags;             /* its open flags */
  sqlite3_file *pShadow; /* the "unix" VFS's file on the same database, for
                            its -shm; 0 until the first xShmMap */
} wsvfsFile;

int wsvfsNew(char* name, int maxPathName);

int wsvfsClose(sqlite3_file*);
int wsvfsRead(sqlite3_file*, void*, int iAmt, sqlite3_int64 iOfst);
int wsvfsWrite(sqlite3_file*,const void*,int iAmt, sqlite3_int64 iOfst);
int wsvfsTruncate(sqlite3_file*, sqlite3_int64 size);
int wsvfsSync(sqlite3_file*, int flags);
int wsvfsFileSize(sqlite3_file*, sqlite3_int64 *pSize);
int wsvfsLock(sqlite3_file*, int);
int wsvfsUnlock(sqlite3_file*, int);
int wsvfsCheckReservedLock(sqlite3_file*, int *pResOut);
int wsvfsFileControl(sqlite3_file*, int op, void *pArg);
int wsvfsSectorSize(sqlite3_file*);
int wsvfsDeviceCharacteristics(sqlite3_file*);
int wsvfsShmMap(sqlite3_file*, int iPg, int pgsz, int, void volatile**);
int wsvfsShmLock(sqlite3_file*, int offset, int n, int flags);
void wsvfsShmBarrier(sqlite3_file*);
int wsvfsShmUnmap(sqlite3_file*, int deleteFlag);
int wsvfsFetch(sqlite3_file*, sqlite3_int64 iOfst, int iAmt, void **pp);
int wsvfsUnfetch(sqlite3_file*, sqlite3_int64 iOfst, void *p);


int wsvfsOpen(sqlite3_vfs*, const char *, sqlite3_file*, int , int *);
int wsvfsDelete(sqlite3_vfs*, const char *, int);
int wsvfsAccess(sqlite3_vfs*, const char *, int, int *);
int wsvfsFullPathname(sqlite3_vfs*, const char *zName, int, char *zOut);
void *wsvfsDlOpen(sqlite3_vfs*, const char *zFilename);
void wsvfsDlError(sqlite3_vfs*, int nByte, char *zErrMsg);
void (*wsvfsDlSym(sqlite3_vfs *pVfs, void *p, const char*zSym))(void);
void wsvfsDlClose(sqlite3_vfs*, void*);
int wsvfsRandomness(sqlite3_vfs*, int nByte, char *zOut);
int wsvfsSleep(sqlite3_vfs*, int microseconds);
int wsvfsCurrentTime(sqlite3_vfs*, double*);
int wsvfsGetLastError(sqlite3_vfs*, int, char *);
int wsvfsCurrentTimeInt64(sqlite3_vfs*, sqlite3_int64*);

const extern sqlite3_io_methods wsvfs_io_methods;

char* wsvfsSqlite3Mprintf(const char* str);

const char* wsvfsURIKey(const char* zName, int n);
const char* wsvfsURIParameter(const char* zName, const char* zParam);

#endif /* SQLITE3_VFS */
