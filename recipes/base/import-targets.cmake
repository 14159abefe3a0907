# Injected with CMAKE_PROJECT_INCLUDE into upstream CMake projects (NNPACK, pthreadpool) that
# build their dependencies with ADD_SUBDIRECTORY unless a target of the same name exists.
# For each name in NNTC_IMPORT_TARGETS it finds the Conan-built package (CMakeDeps) and
# defines a plain-named target for it, so the upstream project links the pinned, separately
# built and tested package instead of downloading and building its own copy.
foreach(_nntc_dep IN LISTS NNTC_IMPORT_TARGETS)
  if(NOT TARGET ${_nntc_dep})
    find_package(${_nntc_dep} REQUIRED CONFIG)
    add_library(${_nntc_dep} INTERFACE IMPORTED)
    target_link_libraries(${_nntc_dep} INTERFACE ${_nntc_dep}::${_nntc_dep})
    message(STATUS "nntc: ${_nntc_dep} from Conan package (${${_nntc_dep}_PACKAGE_FOLDER_RELEASE})")
  endif()
endforeach()
