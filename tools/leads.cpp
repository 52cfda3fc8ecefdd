#include "tools/leads.h"

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <ostream>

#include "core/error.h"
#include "tools/output.h"

namespace bien::cli {

namespace {

template <typename T>
nlohmann::json OrNull(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// A JSON object stored by bien, parsed for output (kept as text if it is not).
nlohmann::json Parsed(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? nlohmann::json(text) : j;
}

nlohmann::json ToJson(const ExhibitLabel& e) {
  return {{"exhibit_id", e.id.value}, {"case", e.case_ref}, {"exhibit", e.exhibit_ref}};
}

nlohmann::json ToJson(const LeadRecord& l) {
  return {{"id", l.id.value},
          {"status", ToString(l.status)},
          {"query", ToJson(l.query)},
          {"candidate", ToJson(l.candidate)},
          {"method", l.method},
          {"score", l.score},
          {"strength", OrNull(l.strength)},
          {"coarse_rank", OrNull(l.coarse_rank)},
          {"registration", Parsed(l.registration_json)},
          {"created_at", l.created_at},
          {"updated_at", l.updated_at},
          {"decided_by", OrNull(l.decided_by)},
          {"decided_at", OrNull(l.decided_at)},
          {"note", OrNull(l.note)}};
}

nlohmann::json ToJson(const HitRecord& h) {
  return {
      {"id", h.id.value},      {"lead", h.lead.value},           {"a", ToJson(h.a)},
      {"b", ToJson(h.b)},      {"confirmed_by", h.confirmed_by}, {"confirmed_at", h.confirmed_at},
      {"note", OrNull(h.note)}};
}

nlohmann::json ToJson(const AlertRecord& a) {
  return {{"id", a.id.value},
          {"hit", a.hit ? nlohmann::json(a.hit->value) : nlohmann::json(nullptr)},
          {"created_at", a.created_at},
          {"origin", a.origin},
          {"summary", a.summary},
          {"payload", Parsed(a.payload_json)},
          {"delivered_at", OrNull(a.delivered_at)},
          {"acknowledged_at", OrNull(a.acknowledged_at)},
          {"acknowledged_by", OrNull(a.acknowledged_by)}};
}

std::string Format(const char* format, double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

std::string Plural(size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

LeadId ParseLeadId(const std::string& text) {
  const size_t start = !text.empty() && text[0] == '#' ? 1 : 0;
  int64_t id = 0;
  const char* first = text.data() + start;
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, id);
  if (first == last || ec != std::errc() || end != last || id < 1) {
    throw Error("'" + text + "' is not a lead number (e.g. 7 or #7; see `bien leads`)");
  }
  return LeadId(id);
}

int CmdLeads(Context& ctx, const LeadsArgs& args) {
  auto store = Store::Open(ctx.NodeDir());
  const auto leads = store->Leads(args.open_only);
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& l : leads) j.push_back(ToJson(l));
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  TextTable table({"LEAD", "STATUS", "QUERY", "CANDIDATE", "SCORE", "STRENGTH", "CREATED"});
  size_t open = 0;
  for (const auto& l : leads) {
    open += l.status == LeadStatus::kOpen ? 1 : 0;
    table.Add({"#" + std::to_string(l.id.value), ToString(l.status), l.query.Label(),
               l.candidate.Label(), l.method + " " + Format("%.4g", l.score),
               l.strength ? Format("%.3g", *l.strength) : "-", l.created_at});
  }
  ctx.out << table.Render();
  if (args.open_only) {
    ctx.out << Plural(leads.size(), "open lead");
  } else {
    ctx.out << Plural(leads.size(), "lead") << " (" << open << " open)";
  }
  ctx.out << " in node '" << store->config().name << "'\n";
  return kExitOk;
}

int CmdConfirm(Context& ctx, const DecideArgs& args) {
  const LeadId id = ParseLeadId(args.lead);
  auto store = Store::Open(ctx.NodeDir());
  const ConfirmedLead c = store->ConfirmLead(id, args.by, args.note);
  if (ctx.json) {
    ctx.out << nlohmann::json{{"lead", ToJson(c.lead)},
                              {"hit", ToJson(c.hit)},
                              {"alert", ToJson(c.alert)}}
                   .dump(2)
            << "\n";
    return kExitOk;
  }
  ctx.out << "confirmed lead #" << c.lead.id.value << ": " << c.lead.query.Label() << " and "
          << c.lead.candidate.Label() << " (by " << c.hit.confirmed_by << ")\n"
          << "hit #" << c.hit.id.value << ": links case " << c.hit.a.case_ref << " and case "
          << c.hit.b.case_ref << ", confirmed at " << c.hit.confirmed_at << "\n"
          << "alert #" << c.alert.id.value << " (" << c.alert.origin << "): " << c.alert.summary
          << "\n";
  return kExitOk;
}

int CmdReject(Context& ctx, const DecideArgs& args) {
  const LeadId id = ParseLeadId(args.lead);
  auto store = Store::Open(ctx.NodeDir());
  const LeadRecord l = store->RejectLead(id, args.by, args.note);
  if (ctx.json) {
    ctx.out << ToJson(l).dump(2) << "\n";
    return kExitOk;
  }
  ctx.out << "rejected lead #" << l.id.value << ": " << l.query.Label() << " and "
          << l.candidate.Label() << " (by " << l.decided_by.value_or(args.by) << ")\n";
  return kExitOk;
}

int CmdAlerts(Context& ctx) {
  auto store = Store::Open(ctx.NodeDir());
  const auto alerts = store->Alerts();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& a : alerts) j.push_back(ToJson(a));
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  TextTable table({"ALERT", "CREATED", "ORIGIN", "HIT", "SUMMARY"});
  for (const auto& a : alerts) {
    table.Add({"#" + std::to_string(a.id.value), a.created_at, a.origin,
               a.hit ? "#" + std::to_string(a.hit->value) : "-", a.summary});
  }
  ctx.out << table.Render();
  ctx.out << Plural(alerts.size(), "alert") << " in node '" << store->config().name << "'\n";
  return kExitOk;
}

}  // namespace bien::cli
