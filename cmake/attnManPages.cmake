# SPDX-License-Identifier: MIT
# Run after Doxygen (cmake -DMAN3=<dir> -P attnManPages.cmake): keeps only
# the manual pages named after the library's own identifiers (attn*, ATTN_*,
# libattn). MAN_LINKS also gives every struct field a page (batch.3,
# scale.3, window.3, ...), which would shadow or clash with other packages'
# pages of the same name; the fields are documented on their struct's page.
file(GLOB pages "${MAN3}/*.3")
foreach(page IN LISTS pages)
  get_filename_component(name "${page}" NAME)
  if(NOT name MATCHES "^(attn|ATTN_|libattn)")
    file(REMOVE "${page}")
  endif()
endforeach()
