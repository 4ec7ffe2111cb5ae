#include "sqlite3vfs.h"
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#ifdef SQLITE3VFS_LOADABLE_EXT
SQLITE_EXTENSION_INIT1
#endif

extern int wsgoVFSOpen(sqlite3_vfs* vfs, const char * name, sqlite3_file* file, int flags, int *outFlags);
extern int wsgoVFSDelete(sqlite3_vfs*, const char *zName, int syncDir);
extern int wsgoVFSAccess(sqlite3_vfs*, const char *zName, int flags, int* pResOut);
extern int wsgoVFSFullPathname(sqlite3_vfs*, const char *zName, int nOut, char* zOut);
extern int wsgoVFSRandomness(sqlite3_vfs*, int nByte, char *zOut);
extern int wsgoVFSSleep(sqlite3_vfs*, int microseconds);
extern int wsgoVFSCurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* piNow);

extern int wsgoVFSClose(sqlite3_file* file);
extern int wsgoVFSRead(sqlite3_file* file, void* buf, int iAmt, sqlite3_int64 iOfst);
extern int wsgoVFSWrite(sqlite3_file* file ,const void* buf, int iAmt, sqlite3_int64 iOfst);
extern int wsgoVFSTruncate(sqlite3_file* file, sqlite3_int64 size);
extern int wsgoVFSSync(sqlite3_file* file, int flags);
extern int wsgoVFSFileSize(sqlite3_file* file, sqlite3_int64 *pSize);
extern int wsgoVFSLock(sqlite3_file* file, int eLock);
extern int wsgoVFSUnlock(sqlite3_file*, int eLock);
extern int wsgoVFSCheckReservedLock(sqlite3_file* file, int *pResOut);
extern int wsgoVFSSectorSize(sqlite3_file* file);
extern int wsgoVFSDeviceCharacteristics(sqlite3_file* file);
extern int wsgoVFSFileControl(sqlite3_file* file, int op, void *pArg);


int wsvfsNew(char* name, int maxPathName) {
  sqlite3_vfs* vfs;
  sqlite3_vfs* delegate;
  vfs = calloc(1, sizeof(sqlite3_vfs));
  if (vfs == NULL) {
    return SQLITE_ERROR;
  }

  delegate = sqlite3_vfs_find(0);

  vfs->iVersion = 2;
  vfs->szOsFile = sizeof(wsvfsFile);
  vfs->mxPathname = maxPathName;
  vfs->zName = name;
  vfs->xOpen = wsvfsOpen;
  vfs->xDelete = wsvfsDelete;
  vfs->xAccess = wsvfsAccess;
  vfs->xFullPathname = wsvfsFullPathname;
  vfs->xDlOpen = delegate->xDlOpen;
  vfs->xDlError = delegate->xDlError;
  vfs->xDlSym = delegate->xDlSym;
  vfs->xDlClose = delegate->xDlClose;
  vfs->xRandomness = wsvfsRandomness;
  vfs->xSleep = wsvfsSleep;
  vfs->xCurrentTime = wsvfsCurrentTime;
  vfs->xGetLastError = delegate->xGetLastError;
  vfs->xCurrentTimeInt64 = wsvfsCurrentTimeInt64;

  return sqlite3_vfs_register(vfs, 0);
}

int wsvfsOpen(sqlite3_vfs* vfs, const char * name, sqlite3_file* file, int flags, int *outFlags) {
  wsvfsFile *p = (wsvfsFile*)file;
  int ret = wsgoVFSOpen(vfs, name, file, flags, outFlags);
  /* walsync fork: methods only for a file that opened. SQLite calls xClose
  ** on any file whose pMethods is set; upstream set them on failure too,
  ** and the close then went to the Go file with id 0. */
  if (ret != SQLITE_OK) {
    file->pMethods = 0;
    return ret;
  }
  p->zName = name;
  p->flags = flags;
  p->pShadow = 0;
  file->pMethods = &wsvfs_io_methods;
  return ret;
}

int wsvfsDelete(sqlite3_vfs* vfs, const char *zName, int syncDir) {
  int ret = wsgoVFSDelete(vfs, zName, syncDir);
  return ret;
}

int wsvfsAccess(sqlite3_vfs* vfs, const char *zName, int flags, int* pResOut) {
  return wsgoVFSAccess(vfs, zName, flags, pResOut);
}

int wsvfsFullPathname(sqlite3_vfs* vfs, const char *zName, int nOut, char* zOut) {
  return wsgoVFSFullPathname(vfs, zName, nOut, zOut);
}

int wsvfsRandomness(sqlite3_vfs* vfs, int nByte, char *zOut) {
  return wsgoVFSRandomness(vfs, nByte, zOut);
}

int wsvfsSleep(sqlite3_vfs* vfs, int microseconds) {
  return wsgoVFSSleep(vfs, microseconds);
}

int wsvfsCurrentTime(sqlite3_vfs* vfs, double* prNow) {
  sqlite3_int64 i = 0;
  int rc;
  rc = wsvfsCurrentTimeInt64(0, &i);
  *prNow = i/86400000.0;
  return rc;
}

int wsvfsCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* piNow) {
  return wsgoVFSCurrentTimeInt64(vfs, piNow);
}

int wsvfsClose(sqlite3_file* file) {
  wsvfsFile *p = (wsvfsFile*)file;
  int rc = wsgoVFSClose(file);
  if (p->pShadow) {
    p->pShadow->pMethods->xShmUnmap(p->pShadow, 0);
    p->pShadow->pMethods->xClose(p->pShadow);
    sqlite3_free(p->pShadow);
    p->pShadow = 0;
  }
  return rc;
}

/* walsync fork: shared memory. The wal-index of a database opened through
** this VFS is the one SQLite's own unix VFS keeps for it: the four xShm
** methods go to a file the "unix" VFS opens on the same database (its
** "shadow", opened at the first xShmMap), so the -shm file, its 32 KiB
** regions, lock bytes and dead-man switch, and the bookkeeping between the
** connections of one process, are SQLite's own, byte for byte: processes
** using the default VFS on the same database coordinate with this one.
** The shadow takes no lock on the database file itself: this VFS's xLock
** does. */
static int wsvfsShadow(wsvfsFile *p, sqlite3_file **pp) {
  sqlite3_vfs *unixVFS;
  sqlite3_file *f;
  int rc, outFlags = 0;
  if (p->pShadow) {
    *pp = p->pShadow;
    return SQLITE_OK;
  }
  if (p->zName == 0 || (p->flags & SQLITE_OPEN_MAIN_DB) == 0) {
    return SQLITE_IOERR_SHMOPEN;
  }
  unixVFS = sqlite3_vfs_find("unix");
  if (unixVFS == 0) {
    return SQLITE_IOERR_SHMOPEN;
  }
  f = (sqlite3_file*)sqlite3_malloc(unixVFS->szOsFile);
  if (f == 0) {
    return SQLITE_NOMEM;
  }
  memset(f, 0, unixVFS->szOsFile);
  rc = unixVFS->xOpen(unixVFS, p->zName, f,
      SQLITE_OPEN_MAIN_DB | (p->flags & (SQLITE_OPEN_READONLY|SQLITE_OPEN_READWRITE)), &outFlags);
  if (rc == SQLITE_OK && (f->pMethods == 0 || f->pMethods->iVersion < 2 || f->pMethods->xShmMap == 0)) {
    rc = SQLITE_IOERR_SHMOPEN;
  }
  if (rc != SQLITE_OK) {
    if (f->pMethods) f->pMethods->xClose(f);
    sqlite3_free(f);
    return rc;
  }
  p->pShadow = f;
  *pp = f;
  return SQLITE_OK;
}

int wsvfsShmMap(sqlite3_file *file, int iPg, int pgsz, int bExtend, void volatile **pp) {
  sqlite3_file *s;
  int rc = wsvfsShadow((wsvfsFile*)file, &s);
  if (rc != SQLITE_OK) {
    *pp = 0;
    return rc;
  }
  return s->pMethods->xShmMap(s, iPg, pgsz, bExtend, pp);
}

int wsvfsShmLock(sqlite3_file *file, int offset, int n, int flags) {
  sqlite3_file *s = ((wsvfsFile*)file)->pShadow;
  if (s == 0) {
    return SQLITE_IOERR_SHMLOCK; /* SQLite maps before it locks */
  }
  return s->pMethods->xShmLock(s, offset, n, flags);
}

void wsvfsShmBarrier(sqlite3_file *file) {
  sqlite3_file *s = ((wsvfsFile*)file)->pShadow;
  if (s) {
    s->pMethods->xShmBarrier(s);
  } else {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }
}

int wsvfsShmUnmap(sqlite3_file *file, int deleteFlag) {
  sqlite3_file *s = ((wsvfsFile*)file)->pShadow;
  if (s == 0) {
    return SQLITE_OK;
  }
  return s->pMethods->xShmUnmap(s, deleteFlag);
}

int wsvfsRead(sqlite3_file* file, void* zBuf, int iAmt, sqlite3_int64 iOfst) {
  return wsgoVFSRead(file, zBuf, iAmt, iOfst);
}

int wsvfsWrite(sqlite3_file* file, const void* zBuf, int iAmt, sqlite3_int64 iOfst) {
  return wsgoVFSWrite(file, zBuf, iAmt, iOfst);
}

int wsvfsTruncate(sqlite3_file* file, sqlite3_int64 size) {
  return wsgoVFSTruncate(file, size);
}

int wsvfsSync(sqlite3_file* file, int flags) {
  return wsgoVFSSync(file, flags);
}

int wsvfsFileSize(sqlite3_file* file, sqlite3_int64 *pSize) {
  return wsgoVFSFileSize(file, pSize);
}

int wsvfsLock(sqlite3_file* file, int eLock) {
  return wsgoVFSLock(file, eLock);
}

int wsvfsUnlock(sqlite3_file* file , int eLock) {
  return wsgoVFSUnlock(file, eLock);
}

int wsvfsCheckReservedLock(sqlite3_file* file, int *pResOut) {
  return wsgoVFSCheckReservedLock(file, pResOut);
}

int wsvfsSectorSize(sqlite3_file* file) {
  return wsgoVFSSectorSize(file);

}

int wsvfsDeviceCharacteristics(sqlite3_file* file) {
  return wsgoVFSDeviceCharacteristics(file);
}

int wsvfsFileControl(sqlite3_file *pFile, int op, void *pArg){
  return wsgoVFSFileControl(pFile, op, pArg);
}

char* wsvfsSqlite3Mprintf(const char* str) {
  return sqlite3_mprintf("%s", str);
}

const char* wsvfsURIKey(const char* zName, int n) {
  return zName == NULL ? NULL : sqlite3_uri_key(zName, n);
}

const char* wsvfsURIParameter(const char* zName, const char* zParam) {
  return zName == NULL ? NULL : sqlite3_uri_parameter(zName, zParam);
}

const sqlite3_io_methods wsvfs_io_methods = {
  2,                               /* iVersion: 2, shared memory (walsync fork) */
  wsvfsClose,                      /* xClose */
  wsvfsRead,                       /* xRead */
  wsvfsWrite,                      /* xWrite */
  wsvfsTruncate,                   /* xTruncate */
  wsvfsSync,                       /* xSync */
  wsvfsFileSize,                   /* xFileSize */
  wsvfsLock,                       /* xLock */
  wsvfsUnlock,                     /* xUnlock */
  wsvfsCheckReservedLock,          /* xCheckReservedLock */
  wsvfsFileControl,                /* xFileControl */
  wsvfsSectorSize,                 /* xSectorSize */
  wsvfsDeviceCharacteristics,      /* xDeviceCharacteristics */
  wsvfsShmMap,                     /* xShmMap */
  wsvfsShmLock,                    /* xShmLock */
  wsvfsShmBarrier,                 /* xShmBarrier */
  wsvfsShmUnmap,                   /* xShmUnmap */
};
