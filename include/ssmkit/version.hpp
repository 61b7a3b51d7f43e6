// The library's version, kept in step with project(VERSION) in CMakeLists.txt, which checks it.
#pragma once

#define SSMKIT_VERSION_MAJOR 0
#define SSMKIT_VERSION_MINOR 1
#define SSMKIT_VERSION_PATCH 0
#define SSMKIT_VERSION_STRING "0.1.0"
