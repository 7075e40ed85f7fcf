// SPDX-License-Identifier: MIT

package attn

/*
#include <attn/attn.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// KvCache is a self-attention key/value cache: for each of Batch rows, the
// keys and values of up to Capacity tokens, for the layer it was made for.
// One call at a time uses it (others wait).
type KvCache struct {
	mu       sync.Mutex
	ptr      *C.attn_kv_cache
	layer    *Layer
	batch    int
	capacity int
}

// NewKvCache makes an empty cache for layer (kdim = vdim = E) of batch rows
// of capacity tokens, with a sliding window of window tokens (0 = none).
func NewKvCache(layer *Layer, batch, capacity, window int) (*KvCache, error) {
	var cfg C.attn_cache_config
	if err := call(func() C.attn_status {
		return C.attn_cache_config_init_sized(&cfg, C.sizeof_attn_cache_config)
	}); err != nil {
		return nil, err
	}
	cfg.batch, cfg.capacity, cfg.window = C.int64_t(batch), C.int64_t(capacity), C.int64_t(window)
	var p *C.attn_kv_cache
	err := layer.read(func(lp *C.attn_layer) error {
		return call(func() C.attn_status { return C.attn_kv_cache_create(lp, &cfg, &p) })
	})
	if err != nil {
		return nil, err
	}
	c := &KvCache{ptr: p, layer: layer, batch: batch, capacity: capacity}
	runtime.SetFinalizer(c, (*KvCache).Close)
	return c, nil
}

// Batch is the cache's number of rows.
func (c *KvCache) Batch() int { return c.batch }

// Capacity is the number of tokens each row can hold.
func (c *KvCache) Capacity() int { return c.capacity }

// Close frees the cache. Idempotent.
func (c *KvCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.attn_kv_cache_destroy(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

func (c *KvCache) use(f func(p *C.attn_kv_cache) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return ErrClosed
	}
	return f(c.ptr)
}

// Lengths returns each row's length and the position of its oldest token
// still held (0 unless a sliding window dropped tokens).
func (c *KvCache) Lengths() (lengths, first []int64, err error) {
	lengths, first = make([]int64, c.batch), make([]int64, c.batch)
	err = c.use(func(p *C.attn_kv_cache) error {
		return call(func() C.attn_status {
			return C.attn_kv_cache_lengths(p, C.int64_t(c.batch), int64Ptr(lengths), int64Ptr(first))
		})
	})
	return lengths, first, err
}

// Truncate rolls rows back: row b keeps its first lengths[b] tokens.
func (c *KvCache) Truncate(lengths []int64) error {
	if err := expectLen(len(lengths), "lengths", "[batch]", c.batch); err != nil {
		return err
	}
	return c.use(func(p *C.attn_kv_cache) error {
		return call(func() C.attn_status {
			return C.attn_kv_cache_truncate(p, C.int64_t(c.batch), int64Ptr(lengths))
		})
	})
}

// Reorder makes row b what row srcRows[b] was (beam search).
func (c *KvCache) Reorder(srcRows []int64) error {
	if err := expectLen(len(srcRows), "srcRows", "[batch]", c.batch); err != nil {
		return err
	}
	return c.use(func(p *C.attn_kv_cache) error {
		return call(func() C.attn_status {
			return C.attn_kv_cache_reorder(p, C.int64_t(c.batch), int64Ptr(srcRows))
		})
	})
}

// Reset empties every row, keeping the memory.
func (c *KvCache) Reset() error {
	return c.use(func(p *C.attn_kv_cache) error {
		return call(func() C.attn_status { return C.attn_kv_cache_reset(p) })
	})
}

// DecodeStep is one self-attention decoding step: x [batch, nNew, E] holds
// each row's next tokens; their keys and values are appended to cache and
// out [batch, nNew, E] receives the output, each new token attending to
// its row's earlier tokens and itself. Attention weights are [batch, H,
// nNew, capacity] or [batch, nNew, capacity]. mask and opts may be nil.
// With rotary embeddings or ALiBi each new token is at its place in its
// row (plus opts.Positions.Start[b] when given: pass the same Start at
// every step) and its key is cached rotated; such a layer refuses
// opts.Positions.Query and Key (StatusBadOption, from the library), other
// layers ignore them.
func (l *Layer) DecodeStep(cache *KvCache, nNew int, x []float32, mask *DecodeMask,
	opts *Options, out []float32) error {
	e, h, b := l.cfg.EmbedDim, l.cfg.NumHeads, cache.batch
	if err := expectLen(len(x), "x", "[batch, n_new, embed_dim]", b, nNew, e); err != nil {
		return err
	}
	if err := expectLen(len(out), "out", "[batch, n_new, embed_dim]", b, nNew, e); err != nil {
		return err
	}
	return l.read(func(lp *C.attn_layer) error {
		return cache.use(func(cp *C.attn_kv_cache) error {
			var mem cmem
			defer mem.free()
			var cm *C.attn_decode_mask
			if mask != nil {
				m, err := mask.toC(&mem, b, nNew)
				if err != nil {
					return err
				}
				cm = m
			}
			n := C.int64_t(nNew)
			dims := weightDims{
				perHead: []int{b, h, nNew, cache.capacity},
				average: []int{b, nNew, cache.capacity},
				shape:   "[batch, heads, n_new, capacity] or [batch, n_new, capacity]",
				pos:     &positionDims{batch: b, lenQ: nNew, lenK: nNew, step: true},
			}
			co, err := prepareOptions(opts, dims, func(o *C.attn_options) (int, error) {
				var sz C.size_t
				err := call(func() C.attn_status { return C.attn_decode_scratch_size(lp, cp, n, o, &sz) })
				return int(sz), err
			})
			if err != nil {
				return err
			}
			defer co.release()
			err = call(func() C.attn_status {
				return C.attn_decode_step(lp, cp, C.int64_t(b), n, floatPtr(x), cm, co.c, floatPtr(out))
			})
			if err == nil {
				co.finish()
			}
			return err
		})
	})
}

// Memory is a cross-attention memory: an encoder output's keys and values
// projected once with a layer's weights. Set waits for the steps using it;
// any number of CrossSteps may read it at once.
type Memory struct {
	mu       sync.RWMutex
	ptr      *C.attn_memory
	layer    *Layer
	batch    int
	capacity int
	lenK     int // of the last successful Set; 0 = never set
}

// NewMemory makes an empty memory for layer of batch rows of up to
// capacity source tokens.
func NewMemory(layer *Layer, batch, capacity int) (*Memory, error) {
	var cfg C.attn_memory_config
	if err := call(func() C.attn_status {
		return C.attn_memory_config_init_sized(&cfg, C.sizeof_attn_memory_config)
	}); err != nil {
		return nil, err
	}
	cfg.batch, cfg.capacity = C.int64_t(batch), C.int64_t(capacity)
	var p *C.attn_memory
	err := layer.read(func(lp *C.attn_layer) error {
		return call(func() C.attn_status { return C.attn_memory_create(lp, &cfg, &p) })
	})
	if err != nil {
		return nil, err
	}
	m := &Memory{ptr: p, layer: layer, batch: batch, capacity: capacity}
	runtime.SetFinalizer(m, (*Memory).Close)
	return m, nil
}

// Batch is the memory's number of rows.
func (m *Memory) Batch() int { return m.batch }

// LenK is the source length of the last successful Set (0 if none).
func (m *Memory) LenK() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lenK
}

// Close frees the memory. Idempotent.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr != nil {
		C.attn_memory_destroy(m.ptr)
		m.ptr = nil
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

// Set projects key [batch, lenK, kdim] and value [batch, lenK, vdim] into
// the memory, replacing what it held. keyLengths [batch] and keyPadding
// [batch, lenK] (nil for none) hide positions from every later step. Only
// opts.Threads and opts.Runtime are used.
func (m *Memory) Set(lenK int, key, value []float32, keyLengths []int64, keyPadding []bool, opts *Options) error {
	c, b := m.layer.cfg, m.batch
	if err := expectLen(len(key), "key", "[batch, len_k, kdim]", b, lenK, c.KDim); err != nil {
		return err
	}
	if err := expectLen(len(value), "value", "[batch, len_k, vdim]", b, lenK, c.VDim); err != nil {
		return err
	}
	if keyLengths != nil {
		if err := expectLen(len(keyLengths), "keyLengths", "[batch]", b); err != nil {
			return err
		}
	}
	var pad []uint8
	if keyPadding != nil {
		if err := expectLen(len(keyPadding), "keyPadding", "[batch, len_k]", b, lenK); err != nil {
			return err
		}
		pad = make([]uint8, len(keyPadding))
		for i, v := range keyPadding {
			if v {
				pad[i] = 1
			}
		}
	}
	var padPtr *C.uint8_t
	if len(pad) > 0 {
		padPtr = (*C.uint8_t)(unsafe.Pointer(&pad[0]))
	}
	var o Options
	if opts != nil {
		o = Options{Threads: opts.Threads, Runtime: opts.Runtime}
	}
	return m.layer.read(func(lp *C.attn_layer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.ptr == nil {
			return ErrClosed
		}
		co, err := prepareOptions(&o, weightDims{}, nil)
		if err != nil {
			return err
		}
		defer co.release()
		err = call(func() C.attn_status {
			return C.attn_memory_set(lp, m.ptr, C.int64_t(b), C.int64_t(lenK), floatPtr(key),
				floatPtr(value), int64Ptr(keyLengths), padPtr, co.c)
		})
		if err == nil {
			m.lenK = lenK
		}
		return err
	})
}

// CrossStep is a cross-attention step: query [batch, n, E] attends to mem;
// out [batch, n, E] receives what Forward would give with the key and
// value of the memory's last Set. mask applies on top of the memory's own
// lengths and padding, with len_q = n and len_k = mem.LenK(). Attention
// weights are [batch, H, n, len_k] or [batch, n, len_k]. A memory has no
// positions: opts.Positions is not used.
func (l *Layer) CrossStep(mem *Memory, n int, query []float32, mask *Mask, opts *Options, out []float32) error {
	e, h, b := l.cfg.EmbedDim, l.cfg.NumHeads, mem.batch
	if err := expectLen(len(query), "query", "[batch, n, embed_dim]", b, n, e); err != nil {
		return err
	}
	if err := expectLen(len(out), "out", "[batch, n, embed_dim]", b, n, e); err != nil {
		return err
	}
	return l.read(func(lp *C.attn_layer) error {
		mem.mu.RLock()
		defer mem.mu.RUnlock()
		if mem.ptr == nil {
			return ErrClosed
		}
		lenK := mem.lenK
		if lenK == 0 {
			return newError(StatusBadSize, "the memory was never set (Memory.Set)")
		}
		var cmemory cmem
		defer cmemory.free()
		var cm *C.attn_mask
		if mask != nil {
			m, err := mask.toC(&cmemory, b, h, n, lenK)
			if err != nil {
				return err
			}
			cm = m
		}
		nn := C.int64_t(n)
		dims := weightDims{
			perHead: []int{b, h, n, lenK},
			average: []int{b, n, lenK},
			shape:   "[batch, heads, n, len_k] or [batch, n, len_k]",
			// no pos: a memory has no positions
		}
		co, err := prepareOptions(opts, dims, func(o *C.attn_options) (int, error) {
			var sz C.size_t
			err := call(func() C.attn_status { return C.attn_cross_scratch_size(lp, mem.ptr, nn, o, &sz) })
			return int(sz), err
		})
		if err != nil {
			return err
		}
		defer co.release()
		err = call(func() C.attn_status {
			return C.attn_cross_step(lp, mem.ptr, C.int64_t(b), nn, floatPtr(query), cm, co.c, floatPtr(out))
		})
		if err == nil {
			co.finish()
		}
		return err
	})
}
