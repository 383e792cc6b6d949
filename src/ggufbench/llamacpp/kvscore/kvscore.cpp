// ggufbench-kvscore: what a KV-cache type (or a second GGUF) costs against a reference, scored in lockstep over the
// same tokens, batch by batch, with host memory O(batch x n_vocab) at any context and nothing written to disk.
//
// Tokens, chunks and statistics are llama-perplexity's (tools/perplexity/perplexity.cpp, KL-divergence mode): the
// text (one trailing newline dropped, as -f does) is tokenized with its special tokens, cut into chunks of n_ctx
// tokens, the first token of each chunk decoded as BOS when the vocabulary adds one. Per scored position: the test's
// and the reference's negative log-likelihood of the next token, KL(reference || test) over the reference's tokens
// whose log-probability is above -16 (llama-perplexity stores no others in its base file), dp = p_test(next) -
// p_ref(next), and whether both put their highest logit on the same token. Two views, named apart:
//   second_half  positions n_ctx/2 .. n_ctx-2, the tokens llama-perplexity scores (its numbers, where both run);
//   bin          every position 0 .. n_ctx-2, binned by position (--bins): the cost along the context.
// Output (stdout, one JSON object a line): a header, one row of sums per chunk x cell x view, fixed histograms of
// KLD and dp per cell x view (percentiles are read from them, so they are approximate), and an end line with the
// peak resident memory. llama.cpp's own log goes to stderr.
//
// Compiles against the llama.h of llama.cpp from b6089 (2025-08) on: where the API changed (flash attention a bool,
// then an enum) the difference is resolved by what the header declares, at compile time.

#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

namespace {

constexpr int FORMAT_VERSION = 1;
constexpr float LOG_PROB_FLOOR = -16.0f;  // llama-perplexity's base file keeps log-probabilities above this

size_t sz(int64_t x) { return static_cast<size_t>(x); }

[[noreturn]] void die(const std::string & msg) {
    fprintf(stderr, "ggufbench-kvscore: error: %s\n", msg.c_str());
    exit(1);
}

// llama.h differences, resolved by what the header declares ------------------------------------------------------

// flash attention: an enum llama_flash_attn_type (-1 auto, 0 off, 1 on) since late 2025, a bool before
template <typename P>
auto set_flash_attn(P & p, int mode, int) -> decltype(p.flash_attn_type, bool()) {
    p.flash_attn_type = static_cast<decltype(p.flash_attn_type)>(mode);
    return true;
}
template <typename P>
auto set_flash_attn(P & p, int mode, long) -> decltype(p.flash_attn, bool()) {
    p.flash_attn = mode == 1;  // no "auto" before the enum: auto is off, as llama-perplexity's bare -fa flag was
    return mode != -1;
}

// memory: llama_memory_clear (mid 2025 on), llama_kv_self_clear before it (below the floor; kept for a clear error)
template <typename C>
auto clear_memory(C * ctx, int) -> decltype(llama_memory_clear(llama_get_memory(ctx), true), void()) {
    llama_memory_clear(llama_get_memory(ctx), true);
}
template <typename C>
auto clear_memory(C * ctx, long) -> decltype(llama_kv_self_clear(ctx), void()) {
    llama_kv_self_clear(ctx);
}

// llama.cpp's log: to stderr, without its debug lines (every tensor's name at load) unless -v
bool g_verbose = false;
ggml_log_level g_last_level = GGML_LOG_LEVEL_INFO;

void log_filtered(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (level != GGML_LOG_LEVEL_CONT) g_last_level = level;  // a continuation line goes with the line it continues
    if (g_verbose || g_last_level != GGML_LOG_LEVEL_DEBUG) {
        fputs(text, stderr);
        fflush(stderr);
    }
}

// Options -------------------------------------------------------------------------------------------------------

struct CellSpec {
    int model = 0;
    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
    std::string kv = "f16";
};

struct Options {
    std::vector<std::string> models;
    std::string text_file;
    int n_ctx = 512;
    int n_chunks = -1;
    int n_batch = 0;  // 0: min(512, n_ctx)
    int n_threads = 0;
    int n_gpu_layers = 0;
    int flash_attn = -1;  // -1 auto, 0 off, 1 on
    CellSpec ref;
    std::vector<CellSpec> cells;
    std::vector<int> bin_edges = {0};
};

bool parse_type(const std::string & name, ggml_type & out) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * n = ggml_type_name(static_cast<ggml_type>(t));
        if (n != nullptr && name == n) {
            out = static_cast<ggml_type>(t);
            return true;
        }
    }
    return false;
}

// [MODEL:]K[-V], as ggufbench names KV types: "q8_0" is K and V q8_0, "q8_0-q4_0" K q8_0 and V q4_0
CellSpec parse_cell(const std::string & spec, size_t n_models) {
    CellSpec c;
    std::string kv = spec;
    const size_t colon = spec.find(':');
    if (colon != std::string::npos) {
        c.model = atoi(spec.substr(0, colon).c_str());
        kv = spec.substr(colon + 1);
    }
    if (c.model < 0 || static_cast<size_t>(c.model) >= n_models) {
        die("cell '" + spec + "' names model " + std::to_string(c.model) + " but " + std::to_string(n_models) +
            " model(s) were given with -m (give -m before --ref/--cell)");
    }
    const size_t dash = kv.find('-');
    const std::string k = kv.substr(0, dash);
    const std::string v = dash == std::string::npos ? k : kv.substr(dash + 1);
    if (!parse_type(k, c.type_k) || !parse_type(v, c.type_v)) {
        die("cell '" + spec + "': unknown KV cache type (ggml type names: f16, bf16, q8_0, q4_0, q4_1, q5_0, ...)");
    }
    c.kv = kv;
    return c;
}

std::vector<int> parse_ints(const std::string & s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        out.push_back(atoi(item.c_str()));
    }
    return out;
}

void usage(const char * argv0) {
    fprintf(stderr,
            "usage: %s -m REF.gguf [-m OTHER.gguf] -f TEXT -c N_CTX [options]\n"
            "  -m PATH            a GGUF (repeatable; model 0 is the reference's unless --ref says otherwise)\n"
            "  -f PATH            the text (a trailing newline is dropped, as llama-perplexity -f does)\n"
            "  -c N               context: chunk length in tokens (default 512)\n"
            "  --chunks N         chunks to score (default: all the text holds)\n"
            "  -b N               tokens per decode, batch = ubatch (default min(512, N_CTX))\n"
            "  -t N               threads (default: all)\n"
            "  -ngl N             layers on the GPU (default 0)\n"
            "  -fa on|off|auto    flash attention (default auto)\n"
            "  --ref [M:]K[-V]    the reference: model M's KV cache types K and V (default 0:f16)\n"
            "  --cell [M:]K[-V]   a cell scored against the reference (repeatable)\n"
            "  --bins E1,E2,...   position bin edges for the all-positions view (default: one bin)\n"
            "  -v                 llama.cpp's debug log too\n",
            argv0);
}

const char * need_value(int & i, int argc, char ** argv) {
    if (i + 1 >= argc) {
        die(std::string(argv[i]) + " needs a value");
    }
    return argv[++i];
}

int parse_flash_attn(const std::string & v) {
    if (v == "on" || v == "1") return 1;
    if (v == "off" || v == "0") return 0;
    if (v == "auto") return -1;
    die("-fa takes on, off or auto, not '" + v + "'");
}

Options parse_args(int argc, char ** argv) {
    Options o;
    std::vector<std::string> ref_spec, cell_specs;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            usage(argv[0]);
            exit(0);
        } else if (a == "-m") {
            o.models.push_back(need_value(i, argc, argv));
        } else if (a == "-f") {
            o.text_file = need_value(i, argc, argv);
        } else if (a == "-c") {
            o.n_ctx = atoi(need_value(i, argc, argv));
        } else if (a == "--chunks") {
            o.n_chunks = atoi(need_value(i, argc, argv));
        } else if (a == "-b") {
            o.n_batch = atoi(need_value(i, argc, argv));
        } else if (a == "-t") {
            o.n_threads = atoi(need_value(i, argc, argv));
        } else if (a == "-ngl") {
            o.n_gpu_layers = atoi(need_value(i, argc, argv));
        } else if (a == "-fa") {
            o.flash_attn = parse_flash_attn(need_value(i, argc, argv));
        } else if (a == "--ref") {
            ref_spec.push_back(need_value(i, argc, argv));
        } else if (a == "--cell") {
            cell_specs.push_back(need_value(i, argc, argv));
        } else if (a == "--bins") {
            o.bin_edges = parse_ints(need_value(i, argc, argv));
        } else if (a == "-v") {
            g_verbose = true;
        } else {
            usage(argv[0]);
            die("unknown argument '" + a + "'");
        }
    }
    if (o.models.empty() || o.text_file.empty()) {
        usage(argv[0]);
        die("-m and -f are required");
    }
    if (o.n_ctx < 4) die("-c must be at least 4");
    o.ref = ref_spec.empty() ? CellSpec() : parse_cell(ref_spec.back(), o.models.size());
    for (const auto & s : cell_specs) o.cells.push_back(parse_cell(s, o.models.size()));
    if (o.cells.empty()) die("no --cell to score against the reference");
    o.n_batch = o.n_batch <= 0 ? std::min(512, o.n_ctx) : std::min(o.n_batch, o.n_ctx);
    if (o.n_threads <= 0) o.n_threads = std::max(1u, std::thread::hardware_concurrency());
    if (o.bin_edges.empty() || o.bin_edges[0] != 0 || !std::is_sorted(o.bin_edges.begin(), o.bin_edges.end()) ||
        std::adjacent_find(o.bin_edges.begin(), o.bin_edges.end()) != o.bin_edges.end()) {
        die("--bins must be increasing edges starting at 0, e.g. 0,1024,4096,16384");
    }
    while (o.bin_edges.size() > 1 && o.bin_edges.back() > o.n_ctx - 2) o.bin_edges.pop_back();  // no position there
    return o;
}

// Statistics ----------------------------------------------------------------------------------------------------

// Per view, the sums llama-perplexity keeps (kl_divergence_result), so every mean and uncertainty it prints
// follows from them, and sums of chunks combine exactly.
struct Sums {
    int64_t count = 0;
    int64_t same_top = 0;
    int64_t nonfinite = 0;  // tokens whose statistics came out NaN or inf: left out of the sums, counted
    double nll = 0, nll2 = 0, nll_base = 0, nll_base2 = 0, nll_nll_base = 0;
    double kld = 0, kld2 = 0, dp = 0, dp2 = 0, dp4 = 0;
    double max_kld = 0, max_abs_dp = 0;
};

struct TokenStat {
    float nll;
    float nll_base;
    double kld;
    float dp;
    bool same_top;
};

// Counts of values on a fixed log10 grid, PER_DECADE bins a decade over [10^lo, 10^hi); below and above it apart.
struct LogHist {
    static constexpr int PER_DECADE = 50;
    int lo, hi;
    std::vector<int64_t> counts;
    int64_t below = 0, above = 0;
    LogHist(int lo_, int hi_) : lo(lo_), hi(hi_), counts(sz(hi_ - lo_) * PER_DECADE, 0) {}
    void add(double x) {
        if (!(x >= std::pow(10.0, lo))) {
            ++below;
            return;
        }
        const long idx = static_cast<long>(std::floor((std::log10(x) - lo) * PER_DECADE));
        if (idx >= static_cast<long>(counts.size())) {
            ++above;
        } else {
            ++counts[sz(std::max(0L, idx))];
        }
    }
};

// KLD on [1e-12, 1e2); dp by sign, |dp| on [1e-9, 1e0]
struct Hists {
    LogHist kld{-12, 2};
    LogHist dp_pos{-9, 1};
    LogHist dp_neg{-9, 1};
    void add(const TokenStat & s) {
        kld.add(s.kld);
        (s.dp >= 0 ? dp_pos : dp_neg).add(std::fabs(static_cast<double>(s.dp)));
    }
};

void add_token(Sums & s, const TokenStat & t) {
    if (!std::isfinite(t.nll) || !std::isfinite(t.nll_base) || !std::isfinite(t.kld) || !std::isfinite(t.dp)) {
        ++s.nonfinite;
        return;
    }
    // as llama-perplexity accumulates them: float products of float values, summed in double
    s.nll += t.nll;
    s.nll2 += t.nll * t.nll;
    s.nll_base += t.nll_base;
    s.nll_base2 += t.nll_base * t.nll_base;
    s.nll_nll_base += t.nll * t.nll_base;
    s.kld += t.kld;
    s.kld2 += t.kld * t.kld;
    s.dp += t.dp;
    const double dp2 = t.dp * t.dp;
    s.dp2 += dp2;
    s.dp4 += dp2 * dp2;
    s.max_kld = std::max(s.max_kld, t.kld);
    s.max_abs_dp = std::max(s.max_abs_dp, static_cast<double>(std::fabs(t.dp)));
    s.same_top += t.same_top;
    ++s.count;
}

struct Softmax {
    float shift;  // max + log(sum exp(l - max)): log p_i = l_i - shift
    int argmax;   // the first highest logit
};

Softmax softmax_of(const float * l, int n_vocab) {
    float mx = l[0];
    int imax = 0;
    for (int i = 1; i < n_vocab; ++i) {
        if (l[i] > mx) {
            mx = l[i];
            imax = i;
        }
    }
    double sum_exp = 0.0;
    for (int i = 0; i < n_vocab; ++i) {
        sum_exp += expf(l[i] - mx);
    }
    const float log_sum_exp = log(sum_exp);
    return {mx + log_sum_exp, imax};
}

// One token of one cell against the reference, as llama-perplexity's log_softmax(..., base_log_prob, ...) computes
// it, with the reference's log-probabilities as floats where llama-perplexity reads them back from 16 bits.
// p_ref: exp(log p_ref) where log p_ref > LOG_PROB_FLOOR, else 0 (filled once per token for all cells).
TokenStat token_stat(const float * lr, const Softmax & r, const float * p_ref, const float * lt, int n_vocab,
                     int next) {
    const Softmax t = softmax_of(lt, n_vocab);
    double sum = 0.0;
    for (int i = 0; i < n_vocab; ++i) {
        if (p_ref[i] != 0.0f) {
            const float lp_ref = lr[i] - r.shift;
            sum += p_ref[i] * (lp_ref - lt[i] + t.shift);
        }
    }
    TokenStat s;
    s.nll = t.shift - lt[next];
    s.nll_base = r.shift - lr[next];
    s.kld = sum;
    s.dp = expf(-s.nll) - expf(-s.nll_base);
    s.same_top = t.argmax == r.argmax;
    return s;
}

void fill_p_ref(const float * lr, const Softmax & r, int n_vocab, float * p_ref) {
    for (int i = 0; i < n_vocab; ++i) {
        const float lp = lr[i] - r.shift;
        p_ref[i] = lp > LOG_PROB_FLOOR ? expf(lp) : 0.0f;
    }
}

// JSON ----------------------------------------------------------------------------------------------------------

std::string json_str(const std::string & s) {
    std::string o = "\"";
    for (const unsigned char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            o += buf;
        } else {
            o += static_cast<char>(c);
        }
    }
    return o + "\"";
}

std::string json_num(double x) {
    if (!std::isfinite(x)) return "null";
    char buf[32];
    snprintf(buf, sizeof buf, "%.17g", x);
    return buf;
}

std::string sums_json(const Sums & s) {
    std::string o;
    o += "\"count\":" + std::to_string(s.count) + ",\"same_top\":" + std::to_string(s.same_top);
    o += ",\"nonfinite\":" + std::to_string(s.nonfinite);
    const std::pair<const char *, double> fields[] = {
        {"sum_nll", s.nll}, {"sum_nll2", s.nll2}, {"sum_nll_base", s.nll_base}, {"sum_nll_base2", s.nll_base2},
        {"sum_nll_nll_base", s.nll_nll_base}, {"sum_kld", s.kld}, {"sum_kld2", s.kld2}, {"sum_dp", s.dp},
        {"sum_dp2", s.dp2}, {"sum_dp4", s.dp4}, {"max_kld", s.max_kld}, {"max_abs_dp", s.max_abs_dp}};
    for (const auto & f : fields) {
        o += std::string(",\"") + f.first + "\":" + json_num(f.second);
    }
    return o;
}

std::string hist_json(const LogHist & h) {
    std::string o = "{\"lo\":" + std::to_string(h.lo) + ",\"hi\":" + std::to_string(h.hi) +
                    ",\"per_decade\":" + std::to_string(LogHist::PER_DECADE) + ",\"below\":" +
                    std::to_string(h.below) + ",\"above\":" + std::to_string(h.above) + ",\"counts\":[";
    bool first = true;
    for (size_t i = 0; i < h.counts.size(); ++i) {
        if (h.counts[i] == 0) continue;
        o += (first ? "[" : ",[") + std::to_string(i) + "," + std::to_string(h.counts[i]) + "]";
        first = false;
    }
    return o + "]}";
}

std::string cell_json(const CellSpec & c) {
    return "{\"model\":" + std::to_string(c.model) + ",\"kv\":" + json_str(c.kv) + ",\"type_k\":" +
           json_str(ggml_type_name(c.type_k)) + ",\"type_v\":" + json_str(ggml_type_name(c.type_v)) + "}";
}

// Memory --------------------------------------------------------------------------------------------------------

// VmHWM (peak resident set) and VmRSS of this process, bytes; -1 where /proc does not say
void memory_now(int64_t & hwm, int64_t & rss) {
    hwm = rss = -1;
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
        long long kb = 0;
        if (sscanf(line.c_str(), "VmHWM: %lld kB", &kb) == 1) hwm = kb * 1024;
        if (sscanf(line.c_str(), "VmRSS: %lld kB", &kb) == 1) rss = kb * 1024;
    }
    if (hwm < 0) {
        struct rusage ru{};
        if (getrusage(RUSAGE_SELF, &ru) == 0) hwm = int64_t(ru.ru_maxrss) * 1024;  // Linux: kB
    }
}

// The text and its tokens -----------------------------------------------------------------------------------------

std::string read_text(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) die("cannot open " + path);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama-perplexity's -f
    return text;
}

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text) {
    // common_tokenize(ctx, text, add_special = true, parse_special = false), as llama-perplexity calls it
    std::vector<llama_token> out(text.size() + 2);
    int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                           static_cast<int32_t>(out.size()), true, false);
    if (n < 0) {
        out.resize(sz(-n));
        n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                           static_cast<int32_t>(out.size()), true, false);
    }
    if (n < 0) die("tokenization failed");
    out.resize(sz(n));
    return out;
}

// FNV-1a, 64 bits, over the tokens' bytes (int32, little-endian on the machines llama.cpp runs on): a short name
// for the token stream, so two runs can say they scored the same tokens (llama-perplexity's base file holds them)
uint64_t fnv1a64(const llama_token * t, size_t n) {
    uint64_t h = 14695981039346656037ull;
    const auto * b = reinterpret_cast<const unsigned char *>(t);
    for (size_t i = 0; i < n * sizeof(llama_token); ++i) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

// Scoring -------------------------------------------------------------------------------------------------------

struct Run {
    const Options & opt;
    std::vector<llama_model *> models;
    llama_context * ref = nullptr;
    std::vector<llama_context *> cells;
    const llama_vocab * vocab = nullptr;
    int n_vocab = 0;
    int n_views = 0;          // second half + the position bins
    std::vector<Hists> hists;  // cell x view
};

llama_context * make_context(const Options & o, llama_model * model, const CellSpec & c) {
    llama_context_params p = llama_context_default_params();
    p.n_ctx = static_cast<uint32_t>(o.n_ctx);
    p.n_batch = static_cast<uint32_t>(o.n_batch);
    p.n_ubatch = static_cast<uint32_t>(o.n_batch);
    p.n_seq_max = 1;
    p.n_threads = o.n_threads;
    p.n_threads_batch = o.n_threads;
    p.type_k = c.type_k;
    p.type_v = c.type_v;
    p.no_perf = true;
    if (!set_flash_attn(p, o.flash_attn, 0)) {
        fprintf(stderr, "ggufbench-kvscore: this llama.cpp has no automatic flash attention: -fa auto is off\n");
    }
    llama_context * ctx = llama_init_from_model(model, p);
    if (ctx == nullptr) {
        die("failed to create a context for KV " + c.kv + " at n_ctx " + std::to_string(o.n_ctx) +
            " (out of memory, or a KV type this backend cannot run: a quantized V cache needs flash attention)");
    }
    return ctx;
}

int view_of_bin(const std::vector<int> & edges, int pos) {
    // view 0 is the second half, view 1 + b is bin b: [edges[b], edges[b + 1])
    return static_cast<int>(std::upper_bound(edges.begin(), edges.end(), pos) - edges.begin());
}

// The statistics of n positions of the current batch, for every cell, on n_threads threads.
void score_batch(const Run & run, const std::vector<const float *> & ref_logits,
                 const std::vector<std::vector<const float *>> & cell_logits, const std::vector<llama_token> & next,
                 std::vector<std::vector<TokenStat>> & out) {
    const int n = static_cast<int>(next.size());
    const int n_workers = std::max(1, std::min(run.opt.n_threads, n));
    std::vector<std::thread> workers;
    for (int w = 0; w < n_workers; ++w) {
        workers.emplace_back([&, w] {
            std::vector<float> p_ref(sz(run.n_vocab));
            for (int i = w; i < n; i += n_workers) {
                const float * lr = ref_logits[sz(i)];
                const Softmax r = softmax_of(lr, run.n_vocab);
                fill_p_ref(lr, r, run.n_vocab, p_ref.data());
                for (size_t c = 0; c < run.cells.size(); ++c) {
                    out[c][sz(i)] = token_stat(lr, r, p_ref.data(), cell_logits[c][sz(i)], run.n_vocab,
                                                   next[sz(i)]);
                }
            }
        });
    }
    for (auto & t : workers) t.join();
}

void decode_or_die(llama_context * ctx, const llama_batch & batch, int chunk, const std::string & what) {
    const int rc = llama_decode(ctx, batch);
    if (rc != 0) {
        die("llama_decode failed (status " + std::to_string(rc) + ") in chunk " + std::to_string(chunk) + " for " +
            what + ": out of memory, or a backend error (see the log above)");
    }
}

// One chunk: every context cleared, then fed the same batches; returns per cell x view the chunk's sums.
std::vector<std::vector<Sums>> score_chunk(Run & run, std::vector<llama_token> & tokens, int chunk, bool add_bos,
                                           llama_batch & batch) {
    const Options & o = run.opt;
    const int start = chunk * o.n_ctx;
    const int first = o.n_ctx / 2;
    const size_t n_cells = run.cells.size();
    std::vector<std::vector<Sums>> sums(n_cells, std::vector<Sums>(sz(run.n_views)));
    clear_memory(run.ref, 0);
    for (auto * c : run.cells) clear_memory(c, 0);
    for (int j = 0; j * o.n_batch < o.n_ctx; ++j) {
        const int p0 = j * o.n_batch;
        const int n = std::min(o.n_batch, o.n_ctx - p0);
        batch.n_tokens = n;
        for (int k = 0; k < n; ++k) {
            const int pos = p0 + k;
            batch.token[k] = (pos == 0 && add_bos) ? llama_vocab_bos(run.vocab) : tokens[sz(start + pos)];
            batch.pos[k] = pos;
            batch.n_seq_id[k] = 1;
            batch.seq_id[k][0] = 0;
            batch.logits[k] = pos <= o.n_ctx - 2;  // the last position has no next token in the chunk
        }
        decode_or_die(run.ref, batch, chunk, "the reference");
        for (size_t c = 0; c < n_cells; ++c) decode_or_die(run.cells[c], batch, chunk, o.cells[c].kv);
        const int n_out = std::min(n, o.n_ctx - 1 - p0);
        std::vector<const float *> ref_logits(sz(n_out));
        std::vector<std::vector<const float *>> cell_logits(n_cells, std::vector<const float *>(sz(n_out)));
        std::vector<llama_token> next(sz(n_out));
        for (int k = 0; k < n_out; ++k) {
            ref_logits[sz(k)] = llama_get_logits_ith(run.ref, k);
            for (size_t c = 0; c < n_cells; ++c) cell_logits[c][sz(k)] = llama_get_logits_ith(run.cells[c], k);
            next[sz(k)] = tokens[sz(start + p0 + k + 1)];
        }
        std::vector<std::vector<TokenStat>> stats(n_cells, std::vector<TokenStat>(sz(n_out)));
        score_batch(run, ref_logits, cell_logits, next, stats);
        for (size_t c = 0; c < n_cells; ++c) {
            for (int k = 0; k < n_out; ++k) {
                const int pos = p0 + k;
                const TokenStat & s = stats[c][sz(k)];
                const int views[2] = {pos >= first ? 0 : -1, view_of_bin(o.bin_edges, pos)};
                for (const int v : views) {
                    if (v < 0) continue;
                    add_token(sums[c][sz(v)], s);
                    run.hists[c * sz(run.n_views) + sz(v)].add(s);
                }
            }
        }
    }
    return sums;
}

std::string view_json(const Options & o, int v) {
    if (v == 0) {
        return "\"view\":\"second_half\",\"lo\":" + std::to_string(o.n_ctx / 2) + ",\"hi\":" +
               std::to_string(o.n_ctx - 1);
    }
    const size_t b = sz(v - 1);
    const int hi = b + 1 < o.bin_edges.size() ? o.bin_edges[b + 1] : o.n_ctx - 1;
    return "\"view\":\"bin\",\"bin\":" + std::to_string(b) + ",\"lo\":" + std::to_string(o.bin_edges[b]) +
           ",\"hi\":" + std::to_string(hi);
}

void print_header(const Run & run, const std::vector<llama_token> & tokens, int n_chunk, bool add_bos,
                  const std::vector<int64_t> & mem_loaded) {
    const Options & o = run.opt;
    std::string models = "[";
    for (size_t i = 0; i < o.models.size(); ++i) models += (i ? "," : "") + json_str(o.models[i]);
    std::string cells = "[";
    for (size_t i = 0; i < o.cells.size(); ++i) cells += (i ? "," : "") + cell_json(o.cells[i]);
    std::string views = "[";
    for (int v = 0; v < run.n_views; ++v) views += std::string(v ? "," : "") + "{" + view_json(o, v) + "}";
    models += "]";
    cells += "]";
    views += "]";
    char hash[32];
    snprintf(hash, sizeof hash, "%016" PRIx64, fnv1a64(tokens.data(), sz(n_chunk) * sz(o.n_ctx)));
    const int64_t logits_bytes = int64_t(1 + o.cells.size()) * o.n_batch * int64_t(run.n_vocab) * 4;
    printf("{\"type\":\"header\",\"format\":\"ggufbench-kvscore\",\"version\":%d,\"n_ctx\":%d,\"n_batch\":%d,"
           "\"n_vocab\":%d,\"n_tokens\":%zu,\"n_chunk\":%d,\"add_bos\":%s,\"first\":%d,\"threads\":%d,"
           "\"n_gpu_layers\":%d,\"flash_attn\":%d,\"models\":%s,\"ref\":%s,\"cells\":%s,\"views\":%s,"
           "\"tokens_fnv1a64\":\"%s\",\"logits_host_bytes\":%" PRId64 ",\"rss_loaded_bytes\":%" PRId64
           ",\"system_info\":%s}\n",
           FORMAT_VERSION, o.n_ctx, o.n_batch, run.n_vocab, tokens.size(), n_chunk, add_bos ? "true" : "false",
           o.n_ctx / 2, o.n_threads, o.n_gpu_layers, o.flash_attn, models.c_str(), cell_json(o.ref).c_str(),
           cells.c_str(), views.c_str(), hash, logits_bytes, mem_loaded[1], json_str(llama_print_system_info()).c_str());
    fflush(stdout);
}

void check_same_tokens(const Run & run, const std::string & text, const std::vector<llama_token> & tokens) {
    for (size_t m = 1; m < run.models.size(); ++m) {
        const llama_vocab * v = llama_model_get_vocab(run.models[m]);
        if (llama_vocab_n_tokens(v) != run.n_vocab) {
            die("model " + std::to_string(m) + " has " + std::to_string(llama_vocab_n_tokens(v)) +
                " tokens in its vocabulary, model 0 has " + std::to_string(run.n_vocab) +
                ": only GGUFs of the same model can be scored against each other");
        }
        if (tokenize(v, text) != tokens) {
            die("model " + std::to_string(m) + " tokenizes the text differently from model 0: the two cannot be "
                "scored over the same tokens");
        }
    }
}

}  // namespace

int main(int argc, char ** argv) {
    const Options opt = parse_args(argc, argv);
    llama_log_set(log_filtered, nullptr);
    llama_backend_init();
    Run run{opt, {}, nullptr, {}, nullptr, 0, 0, {}};
    for (const auto & path : opt.models) {
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = opt.n_gpu_layers;
        llama_model * m = llama_model_load_from_file(path.c_str(), mp);
        if (m == nullptr) die("failed to load model " + path);
        run.models.push_back(m);
    }
    run.vocab = llama_model_get_vocab(run.models[0]);
    run.n_vocab = llama_vocab_n_tokens(run.vocab);
    const std::string text = read_text(opt.text_file);
    std::vector<llama_token> tokens = tokenize(run.vocab, text);
    check_same_tokens(run, text, tokens);
    const bool add_bos = llama_vocab_get_add_bos(run.vocab);
    const int n_chunk_max = static_cast<int>(tokens.size() / sz(opt.n_ctx));
    const int n_chunk = opt.n_chunks < 0 ? n_chunk_max : std::min(opt.n_chunks, n_chunk_max);
    if (n_chunk < 1) {
        die("the text tokenizes to only " + std::to_string(tokens.size()) + " tokens, fewer than one context of " +
            std::to_string(opt.n_ctx));
    }
    run.ref = make_context(opt, run.models[sz(opt.ref.model)], opt.ref);
    for (const auto & c : opt.cells) run.cells.push_back(make_context(opt, run.models[sz(c.model)], c));
    run.n_views = 1 + static_cast<int>(opt.bin_edges.size());
    run.hists.assign(opt.cells.size() * sz(run.n_views), Hists());
    std::vector<int64_t> mem(2);
    memory_now(mem[0], mem[1]);
    print_header(run, tokens, n_chunk, add_bos, mem);

    llama_batch batch = llama_batch_init(opt.n_batch, 0, 1);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Sums> total(opt.cells.size());
    for (int chunk = 0; chunk < n_chunk; ++chunk) {
        const auto tc = std::chrono::steady_clock::now();
        const auto sums = score_chunk(run, tokens, chunk, add_bos, batch);
        for (size_t c = 0; c < opt.cells.size(); ++c) {
            for (int v = 0; v < run.n_views; ++v) {
                printf("{\"type\":\"chunk\",\"chunk\":%d,\"cell\":%zu,%s,%s}\n", chunk, c, view_json(opt, v).c_str(),
                       sums_json(sums[c][sz(v)]).c_str());
            }
            const Sums & s = sums[c][0];
            total[c].kld += s.kld;
            total[c].count += s.count;
        }
        fflush(stdout);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
        int64_t hwm_now = 0, rss_now = 0;
        memory_now(hwm_now, rss_now);
        fprintf(stderr, "ggufbench-kvscore: chunk %d/%d: %.2f s, RSS %.0f MiB; mean KLD so far (second half):",
                chunk + 1, n_chunk, dt, double(rss_now) / (1 << 20));
        for (size_t c = 0; c < opt.cells.size(); ++c) {
            fprintf(stderr, " %s %.6f", opt.cells[c].kv.c_str(), total[c].count ? total[c].kld / total[c].count : 0.0);
        }
        fprintf(stderr, "\n");
    }
    llama_batch_free(batch);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t c = 0; c < opt.cells.size(); ++c) {
        for (int v = 0; v < run.n_views; ++v) {
            const Hists & h = run.hists[c * sz(run.n_views) + sz(v)];
            printf("{\"type\":\"hist\",\"cell\":%zu,%s,\"kld\":%s,\"dp_pos\":%s,\"dp_neg\":%s}\n", c,
                   view_json(opt, v).c_str(), hist_json(h.kld).c_str(), hist_json(h.dp_pos).c_str(),
                   hist_json(h.dp_neg).c_str());
        }
    }
    std::vector<int64_t> kv_bytes;
    kv_bytes.push_back(int64_t(llama_state_seq_get_size(run.ref, 0)));
    for (auto * c : run.cells) kv_bytes.push_back(int64_t(llama_state_seq_get_size(c, 0)));
    std::string kv = "[";
    for (size_t i = 0; i < kv_bytes.size(); ++i) kv += (i ? "," : "") + std::to_string(kv_bytes[i]);
    kv += "]";
    int64_t hwm = 0, rss = 0;
    memory_now(hwm, rss);
    printf("{\"type\":\"end\",\"chunks\":%d,\"seconds\":%.3f,\"peak_rss_bytes\":%" PRId64 ",\"rss_bytes\":%" PRId64
           ",\"kv_state_bytes\":%s}\n",
           n_chunk, seconds, hwm, rss, kv.c_str());
    fflush(stdout);
    llama_free(run.ref);
    for (auto * c : run.cells) llama_free(c);
    for (auto * m : run.models) llama_model_free(m);
    llama_backend_free();
    return 0;
}
