// The native test binary: doctest's runner plus the helpers every test file shares.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
