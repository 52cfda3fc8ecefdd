// `bien leads | confirm | reject | alerts`: the review of candidate pairs that
// a search flagged (leads), the hits experts confirm and the alerts they raise.
#pragma once

#include <string>

#include "tools/commands.h"

namespace bien::cli {

struct LeadsArgs {
  bool open_only = false;  // --open
};
int CmdLeads(Context& ctx, const LeadsArgs& args);

// `bien confirm LEAD --by NAME [--note TEXT]` and `bien reject ...`.
struct DecideArgs {
  std::string lead;  // "7" or "#7"
  std::string by;    // the expert deciding
  std::string note;
};
int CmdConfirm(Context& ctx, const DecideArgs& args);
int CmdReject(Context& ctx, const DecideArgs& args);

int CmdAlerts(Context& ctx);

// "7" or "#7" -> LeadId(7); throws bien::Error naming the text otherwise.
LeadId ParseLeadId(const std::string& text);

}  // namespace bien::cli
