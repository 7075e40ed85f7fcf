# SPDX-License-Identifier: MIT
# Install-time part of attnPkgConfig.cmake: writes attn.pc for the prefix
# this installation uses (CMAKE_INSTALL_PREFIX here is the one given to
# `cmake --install --prefix`, else the configured one) and installs it into
# <libdir>/pkgconfig (under DESTDIR when set).

get_filename_component(prefix "${CMAKE_INSTALL_PREFIX}" ABSOLUTE)

# Absolute form of a GNUInstallDirs setting, which is relative to the prefix
# unless the user gave an absolute path.
function(attn_full_dir out setting)
  if(IS_ABSOLUTE "${setting}")
    get_filename_component(dir "${setting}" ABSOLUTE)
  else()
    get_filename_component(dir "${prefix}/${setting}" ABSOLUTE)
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

# "${prefix}/rest" when dir lies under the prefix, else dir itself.
function(attn_pc_path out dir)
  if(prefix STREQUAL "/")
    set(head "/")
  else()
    set(head "${prefix}/")
  endif()
  string(LENGTH "${head}" n)
  string(SUBSTRING "${dir}/" 0 ${n} start)
  if(dir STREQUAL prefix)
    set(${out} "\${prefix}" PARENT_SCOPE)
  elseif(start STREQUAL head)
    string(SUBSTRING "${dir}" ${n} -1 rest)
    set(${out} "\${prefix}/${rest}" PARENT_SCOPE)
  else()
    set(${out} "${dir}" PARENT_SCOPE)
  endif()
endfunction()

attn_full_dir(libdir "${ATTN_PC_LIBDIR_SETTING}")
attn_full_dir(includedir "${ATTN_PC_INCLUDEDIR_SETTING}")
attn_pc_path(ATTN_PC_LIBDIR "${libdir}")
attn_pc_path(ATTN_PC_INCLUDEDIR "${includedir}")
if(ATTN_PC_RELOCATABLE AND ATTN_PC_LIBDIR MATCHES "^\\\${prefix}")
  # The prefix, seen from <libdir>/pkgconfig: the file stays right wherever
  # the whole tree is moved (or staged with DESTDIR).
  file(RELATIVE_PATH up "${libdir}/pkgconfig" "${prefix}")
  string(REGEX REPLACE "/$" "" up "${up}")
  set(ATTN_PC_PREFIX "\${pcfiledir}/${up}")
else()
  set(ATTN_PC_PREFIX "${prefix}")
endif()

configure_file("${ATTN_PC_TEMPLATE}" "${ATTN_PC_WORK_DIR}/attn.pc" @ONLY)
file(INSTALL DESTINATION "${libdir}/pkgconfig" TYPE FILE
     FILES "${ATTN_PC_WORK_DIR}/attn.pc")
