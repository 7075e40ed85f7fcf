# SPDX-License-Identifier: MIT
# Finding the CBLAS that libattn calls (cblas_sgemm).
#
# Shared by the build and by the installed attnConfig.cmake (which needs it
# only for a static libattn), so both agree on what each choice means:
#
#   openblas  OpenBLAS itself: pkg-config module "openblas", else a library
#             named openblas. The library records libopenblas.so.0.
#   generic   The system's generic BLAS: pkg-config module "blas", else a
#             library named blas. On Debian both resolve to libblas.so.3,
#             which every BLAS there provides (reference BLAS, OpenBLAS,
#             BLIS, ATLAS), so users pick one with update-alternatives
#             without relinking.
#
# attn_find_blas(<openblas|generic>) defines the imported target attn::blas
# and sets, in the caller's scope:
#   ATTN_BLAS_PC_MODULE     the pkg-config module used, or "" without one
#   ATTN_BLAS_LIBS_PRIVATE  link flags for attn.pc when no module was used

function(attn_find_blas kind)
  if(kind STREQUAL "openblas")
    set(module openblas)
    set(libname openblas)
    set(hint "libopenblas-dev")
  elseif(kind STREQUAL "generic")
    set(module blas)
    set(libname blas)
    set(hint "libblas-dev, or any package that provides libblas.so")
  else()
    message(FATAL_ERROR
      "libattn: BLAS choice must be openblas or generic, not '${kind}'")
  endif()

  if(TARGET attn::blas)
    return()
  endif()

  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(ATTN_BLAS_PC QUIET IMPORTED_TARGET ${module})
  endif()

  add_library(attn::blas INTERFACE IMPORTED)
  if(ATTN_BLAS_PC_FOUND)
    target_link_libraries(attn::blas INTERFACE PkgConfig::ATTN_BLAS_PC)
    set(ATTN_BLAS_PC_MODULE ${module} PARENT_SCOPE)
    set(ATTN_BLAS_LIBS_PRIVATE "" PARENT_SCOPE)
    return()
  endif()

  # No pkg-config file: look for the library and cblas.h directly.
  find_library(ATTN_BLAS_LIBRARY NAMES ${libname})
  find_path(ATTN_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES ${libname})
  if(NOT ATTN_BLAS_LIBRARY OR NOT ATTN_CBLAS_INCLUDE_DIR)
    message(FATAL_ERROR
      "libattn: no ${kind} BLAS found (neither pkg-config module "
      "'${module}' nor lib${libname} with cblas.h). On Debian install "
      "${hint}.")
  endif()
  set_target_properties(attn::blas PROPERTIES
    INTERFACE_LINK_LIBRARIES "${ATTN_BLAS_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${ATTN_CBLAS_INCLUDE_DIR}")
  set(ATTN_BLAS_PC_MODULE "" PARENT_SCOPE)
  set(ATTN_BLAS_LIBS_PRIVATE "-l${libname}" PARENT_SCOPE)
endfunction()
