from csnotify.cli import main

main()
