// The `bien` command as a library function, so tests can run it in-process.
#pragma once

#include <iosfwd>

namespace bien::cli {

// Exit codes of every subcommand.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,  // the command failed; nothing was changed by the failed part
  kExitUsage = 2,    // bad command line
  kExitPartial = 3,  // a bulk command did part of its work (e.g. some files rejected)
};

int Run(int argc, const char* const argv[], std::ostream& out, std::ostream& err);

}  // namespace bien::cli
