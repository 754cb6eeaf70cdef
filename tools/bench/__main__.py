from tools.bench.e2e import main

main()
