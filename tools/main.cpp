#include <iostream>

#include "tools/cli.h"

int main(int argc, char** argv) { return bien::cli::Run(argc, argv, std::cout, std::cerr); }
