# SPDX-License-Identifier: MIT
# attn.pc, the pkg-config file of libattn.
#
# attn_install_pkg_config(TEMPLATE <attn.pc.in> MODULES <pkg-config modules>
#                         LIBS <flags> CFLAGS <flags> RELOCATABLE <bool>
#                         COMPONENT <component>)
#
# MODULES are the pkg-config modules libattn links privately (its BLAS,
# cJSON) and LIBS further flags a static libattn needs (-lpthread -lm).
#
# Consumers get only what they need:
#   Cflags        -I<includedir> (and -DATTN_STATIC_DEFINE for a static
#                 libattn); attn.h includes no header of a dependency.
#   Libs          -L<libdir> -lattn
#   Libs.private  the dependencies' link flags, for `pkg-config --static`.
# The dependencies are written as link flags, not as a Requires.private
# line: pkg-config adds the Cflags of every Requires.private module to
# `pkg-config --cflags attn` (-I/usr/include/cjson and the BLAS's include
# directory), which no consumer of attn.h needs. A -L directory of a
# dependency is kept only when the linker would not find the library in its
# default directories, the directories where the shared libattn's loader
# also finds it; on Debian that keeps the alternatives-managed libblas.so
# switchable.
#
# The file is written when it is installed, from the prefix that
# installation really uses, so `cmake --install --prefix DIR` gets a correct
# file as well as -DCMAKE_INSTALL_PREFIX; DESTDIR stages it without
# changing it. When the libdir lies under the prefix (the usual case), the
# file finds the prefix from its own location, prefix=${pcfiledir}/../..,
# so the installed tree can also be moved as a whole. An absolute
# CMAKE_INSTALL_LIBDIR outside the prefix is written as it is, with an
# absolute prefix. RELOCATABLE OFF writes the absolute prefix in every case,
# as distribution packages, installed to one known place, want it: pkg-config
# then recognises -I/usr/include as a system directory and applies its
# sysroot to it when cross-compiling.

function(attn_install_pkg_config)
  cmake_parse_arguments(PC "" "TEMPLATE;COMPONENT;RELOCATABLE"
                        "MODULES;LIBS;CFLAGS" ${ARGN})
  set(private "")
  foreach(module IN LISTS PC_MODULES)
    foreach(kind L l other)
      execute_process(
        COMMAND ${PKG_CONFIG_EXECUTABLE} --libs-only-${kind} ${module}
        OUTPUT_VARIABLE flags_${kind} RESULT_VARIABLE rc
        OUTPUT_STRIP_TRAILING_WHITESPACE)
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR "libattn: pkg-config --libs ${module} failed")
      endif()
      separate_arguments(flags_${kind} UNIX_COMMAND "${flags_${kind}}")
    endforeach()
    set(need_dirs FALSE)
    foreach(flag IN LISTS flags_l)
      string(REGEX REPLACE "^-l" "" name "${flag}")
      unset(found CACHE)
      find_library(found NAMES ${name} NO_DEFAULT_PATH
                   PATHS ${CMAKE_C_IMPLICIT_LINK_DIRECTORIES})
      if(NOT found)
        set(need_dirs TRUE)
      endif()
      unset(found CACHE)
    endforeach()
    if(need_dirs)
      list(APPEND private ${flags_L})
    endif()
    list(APPEND private ${flags_l} ${flags_other})
  endforeach()
  list(APPEND private ${PC_LIBS})
  list(REMOVE_DUPLICATES private)
  list(JOIN private " " private)
  list(JOIN PC_CFLAGS " " cflags)
  if(cflags)
    set(cflags " ${cflags}")
  endif()

  # Everything the install-time script needs, fixed now.
  set(script "${CMAKE_CURRENT_BINARY_DIR}/attnWritePkgConfig.cmake")
  file(WRITE "${script}"
    "set(ATTN_PC_TEMPLATE [[${PC_TEMPLATE}]])\n"
    "set(ATTN_PC_WORK_DIR [[${CMAKE_CURRENT_BINARY_DIR}/pkgconfig]])\n"
    "set(ATTN_PC_LIBDIR_SETTING [[${CMAKE_INSTALL_LIBDIR}]])\n"
    "set(ATTN_PC_INCLUDEDIR_SETTING [[${CMAKE_INSTALL_INCLUDEDIR}]])\n"
    "set(PROJECT_DESCRIPTION [[${PROJECT_DESCRIPTION}]])\n"
    "set(PROJECT_VERSION [[${PROJECT_VERSION}]])\n"
    "set(ATTN_PC_LIBS_PRIVATE [[${private}]])\n"
    "set(ATTN_PC_CFLAGS [[${cflags}]])\n"
    "set(ATTN_PC_RELOCATABLE ${PC_RELOCATABLE})\n"
    "include([[${CMAKE_CURRENT_FUNCTION_LIST_DIR}/attnWritePkgConfig.cmake]])\n")
  install(SCRIPT "${script}" COMPONENT ${PC_COMPONENT})
endfunction()
