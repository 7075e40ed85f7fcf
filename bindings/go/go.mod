// SPDX-License-Identifier: MIT
module libattn/attn

go 1.19
