# SPDX-License-Identifier: MIT
# attn_warn_unlisted_exports(<header dir> <version script>)
#
# Warns at configure time about functions declared ATTN_API in the public
# headers but not listed in the linker version script: such a function
# would be hidden from users of the shared library. This is only an early
# hint for whoever adds a function; scripts/check-exports.sh is the check.
# CMake runs again when a header or the version script changes.
function(attn_warn_unlisted_exports header_dir map)
  file(GLOB headers ${header_dir}/*.h)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${headers} ${map})
  file(READ ${map} map_text)
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" map_text "${map_text}")
  foreach(header IN LISTS headers)
    file(READ ${header} text)
    string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" text "${text}")
    string(REGEX REPLACE "#[^\n]*" "" text "${text}")
    string(REGEX MATCHALL "ATTN_API[^;(#]*[(]" decls "${text}")
    foreach(decl IN LISTS decls)
      string(REGEX MATCH "([A-Za-z_][A-Za-z0-9_]*)[ \t\r\n]*[(]$" _ "${decl}")
      set(name ${CMAKE_MATCH_1})
      if(name AND NOT map_text MATCHES "[ \t\r\n]${name}[ \t\r\n]*;")
        message(WARNING "libattn: ${name} is declared ATTN_API in "
          "${header} but not listed in ${map}; add the line '${name};' to "
          "its newest version node, or the shared library will not "
          "export it.")
      endif()
    endforeach()
  endforeach()
endfunction()
