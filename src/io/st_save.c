/* SPDX-License-Identifier: MIT */
/* Saving a layer's weights to a safetensors file: the header is built with
 * cJSON, the data converted to little-endian F32, all written to a
 * temporary file next to the target that is then renamed into place. */
#define _FILE_OFFSET_BITS 64

#include "io/half.h"
#include "io/json.h"
#include "io/st_file.h"
#include "io/st_names.h"

#include "common/checked.h"
#include "common/error.h"

#include <cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes converted per write. */
#define WRITE_CHUNK ((size_t)1 << 16)

/* Adds a JSON integer written exactly (cJSON would print doubles, with an
 * exponent beyond 15 digits). */
static bool add_int(cJSON *array, uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  cJSON *item = cJSON_CreateRaw(buf);
  return item && cJSON_AddItemToArray(array, item);
}

/* Adds prefix + t's name with its dtype, shape and data_offsets [offset,
 * offset + bytes) to root, keys in the order torch writes them. */
static bool add_entry(cJSON *root, const char *prefix, const st_tensor *t,
                      uint64_t offset, uint64_t bytes) {
  cJSON *entry = cJSON_CreateObject();
  char *name = attn_st_concat(prefix, attn_st_name(t->name));
  bool ok = entry && name && cJSON_AddItemToObject(root, name, entry);
  free(name);
  if (!ok) {
    cJSON_Delete(entry);
    return false;
  }
  cJSON *shape = NULL, *offsets = NULL;
  ok = cJSON_AddStringToObject(entry, "dtype", "F32") &&
       (shape = cJSON_AddArrayToObject(entry, "shape")) &&
       (offsets = cJSON_AddArrayToObject(entry, "data_offsets"));
  for (int d = 0; ok && d < t->rank; d++)
    ok = add_int(shape, (uint64_t)t->dim[d]);
  return ok && add_int(offsets, offset) && add_int(offsets, offset + bytes);
}

/* The header text (unpadded) for tensors t, to be freed with cJSON_free();
 * NULL when out of memory. */
static char *build_header(const char *prefix, const st_tensor *t, int n) {
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
  bool ok = meta && cJSON_AddStringToObject(meta, "format", "pt");
  uint64_t offset = 0;
  for (int i = 0; ok && i < n; i++) {
    uint64_t bytes = (uint64_t)st_tensor_count(&t[i]) * sizeof(float);
    ok = add_entry(root, prefix, &t[i], offset, bytes);
    offset += bytes;
  }
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}

static attn_status write_all(int fd, const void *buf, size_t len,
                             const char *path) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t put = write(fd, p, len);
    if (put < 0 && errno == EINTR)
      continue;
    if (put <= 0) {
      char msg[128];
      return attn_fail(
          ATTN_ERR_IO, "cannot write '%.300s': %s", path,
          attn_st_errno_text(put < 0 ? errno : EIO, msg, sizeof msg));
    }
    p += put;
    len -= (size_t)put;
  }
  return ATTN_OK;
}

/* The header, padded with spaces to `padded` bytes, then every tensor's
 * floats. */
static attn_status write_file(int fd, const char *tmp, const attn_layer *l,
                              const char *header, size_t padded,
                              const st_tensor *t, int n) {
  unsigned char *buf = malloc(WRITE_CHUNK);
  if (!buf)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a write buffer");
  size_t hlen = strlen(header);
  attn_put_le64(buf, padded);
  attn_status st = write_all(fd, buf, 8, tmp);
  if (st == ATTN_OK)
    st = write_all(fd, header, hlen, tmp);
  if (st == ATTN_OK) {
    memset(buf, ' ', padded - hlen);
    st = write_all(fd, buf, padded - hlen, tmp);
  }
  for (int i = 0; st == ATTN_OK && i < n; i++) {
    const float *src = attn_slot_ptr(l, t[i].slot);
    int64_t count = st_tensor_count(&t[i]);
    size_t per = WRITE_CHUNK / 4;
    for (int64_t k = 0; st == ATTN_OK && k < count; k += (int64_t)per) {
      size_t m = (size_t)(count - k) < per ? (size_t)(count - k) : per;
      for (size_t j = 0; j < m; j++)
        attn_put_le32(buf + 4 * j, attn_float_to_bits(src[k + (int64_t)j]));
      st = write_all(fd, buf, 4 * m, tmp);
    }
  }
  free(buf);
  return st;
}

/* Flushes the directory holding path so that the rename survives a crash.
 * Best effort: some file systems cannot sync directories. */
static void sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? malloc((size_t)(slash - path) + 2) : NULL;
  if (slash && !dir)
    return;
  if (dir) {
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    memcpy(dir, path, len);
    dir[len] = '\0';
  }
  int fd = open(dir ? dir : ".", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

/* Creates a new temporary file next to path: path + ".tmp-<pid>-<n>",
 * with the file name part shortened when the whole would exceed the
 * system's limit on the length of a name. On success *tmp (to be freed)
 * names it and *fd is open for writing. */
static attn_status create_temp(const char *path, char **tmp, int *fd) {
  const char *slash = strrchr(path, '/');
  size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
  size_t base_len = strlen(path) - dir_len, size;
  if (!attn_addsz(strlen(path), 48, &size) || !(*tmp = malloc(size)))
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot allocate a file name");
  int err = 0;
  *fd = -1;
  /* O_EXCL makes the name ours; the umask applies as to any new file. */
  for (unsigned attempt = 0; *fd < 0 && attempt < 100; attempt++) {
    char suffix[40];
    int sl =
        snprintf(suffix, sizeof suffix, ".tmp-%ld-%u", (long)getpid(), attempt);
    size_t keep = base_len + (size_t)sl <= NAME_MAX ? base_len
                  : NAME_MAX > (size_t)sl           ? NAME_MAX - (size_t)sl
                                                    : 0;
    snprintf(*tmp, size, "%.*s%s", (int)(dir_len + keep), path, suffix);
    *fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    err = errno;
    if (*fd < 0 && err != EEXIST && err != EINTR)
      break;
  }
  if (*fd >= 0)
    return ATTN_OK;
  char msg[128];
  attn_status st = attn_fail(ATTN_ERR_IO, "cannot create '%.300s': %s", *tmp,
                             attn_st_errno_text(err, msg, sizeof msg));
  free(*tmp);
  *tmp = NULL;
  return st;
}

static attn_status check_save_args(const attn_layer *l, const char *path,
                                   const char *prefix, int32_t naming) {
  if (!l || !path)
    return attn_fail(ATTN_ERR_NULL_POINTER,
                     "attn_layer_save_safetensors: %s is NULL",
                     !l ? "layer" : "path");
  if (naming != ATTN_NAMES_TORCH && naming != ATTN_NAMES_HF &&
      naming != ATTN_NAMES_HF_O_PROJ)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "unknown naming %d (ATTN_NAMES_TORCH, ATTN_NAMES_HF or "
                     "ATTN_NAMES_HF_O_PROJ)",
                     (int)naming);
  if (!attn_utf8_valid(prefix))
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "prefix is not valid UTF-8, which safetensors headers "
                     "must be");
  attn_status st = attn_layer_check_set(l, "cannot save the layer");
  if (st != ATTN_OK)
    return st;
  /* Torch's names pack the q, k and v biases into one tensor: a layer
   * with some of them only cannot be saved so. */
  int qkv = 0;
  for (int s = ATTN_SLOT_BQ; s <= ATTN_SLOT_BV; s++)
    qkv += attn_has_bias(l, s);
  if (naming == ATTN_NAMES_TORCH && qkv != 0 && qkv != 3)
    return attn_fail(ATTN_ERR_BAD_OPTION,
                     "ATTN_NAMES_TORCH packs the q, k and v biases into "
                     "in_proj_bias, and the layer has %d of them (bias_parts "
                     "%d): save it with Hugging Face names",
                     qkv, l->fx.bias_parts);
  return ATTN_OK;
}

/* Writes, flushes and renames the temporary file into place; removes it
 * on failure. */
static attn_status write_and_rename(const attn_layer *l, const char *path,
                                    const char *header, size_t padded,
                                    const st_tensor *t, int n) {
  char *tmp = NULL, msg[128];
  int fd = -1;
  attn_status st = create_temp(path, &tmp, &fd);
  if (st != ATTN_OK)
    return st;
  st = write_file(fd, tmp, l, header, padded, t, n);
  if (st == ATTN_OK && fsync(fd) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot flush '%.300s' to disk: %s", tmp,
                   attn_st_errno_text(errno, msg, sizeof msg));
  if (close(fd) != 0 && st == ATTN_OK)
    st = attn_fail(ATTN_ERR_IO, "cannot close '%.300s': %s", tmp,
                   attn_st_errno_text(errno, msg, sizeof msg));
  if (st == ATTN_OK && rename(tmp, path) != 0)
    st = attn_fail(ATTN_ERR_IO, "cannot rename '%.300s' to '%.300s': %s", tmp,
                   path, attn_st_errno_text(errno, msg, sizeof msg));
  if (st != ATTN_OK)
    unlink(tmp);
  else
    sync_parent_dir(path);
  free(tmp);
  return st;
}

attn_status attn_layer_save_safetensors(const attn_layer *l, const char *path,
                                        const char *prefix, int32_t naming) {
  if (!prefix)
    prefix = "";
  attn_status st = check_save_args(l, path, prefix, naming);
  if (st != ATTN_OK)
    return st;
  /* The layer's sizes already fit in memory as floats, so the data section
   * (the same floats) cannot overflow; the header is small. */
  st_tensor t[ST_MAX_TENSORS];
  int scheme = naming == ATTN_NAMES_HF          ? ST_HF_OUT_PROJ
               : naming == ATTN_NAMES_HF_O_PROJ ? ST_HF_O_PROJ
               : attn_layer_is_square(l)        ? ST_TORCH_PACKED
                                                : ST_TORCH_SEPARATE;
  int n = attn_st_layer_tensors(l, scheme, t);
  char *header = build_header(prefix, t, n);
  if (!header)
    return attn_fail(ATTN_ERR_NO_MEMORY, "cannot build the safetensors header");
  /* Pad with spaces so that the data start at a multiple of 8 bytes. */
  size_t hlen = strlen(header), padded;
  if (!attn_addsz(hlen, 7, &padded))
    st = attn_fail(ATTN_ERR_OVERFLOW, "safetensors header too long");
  else
    st = write_and_rename(l, path, header, padded & ~(size_t)7, t, n);
  cJSON_free(header);
  return st;
}
