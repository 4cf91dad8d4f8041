from hpcthreads.cli import main

main()
